"""Validation streams: batches decoded from a lazy dataset (by threads or not) give the figures of
the same samples as one decoded array."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune.data import Dataset, load_dataset
from onnxprune.lazydata import LazyArray
from onnxprune.runtime.validate import validate_models


def test_streamed_validation_equals_validation_of_the_decoded_array(models_dir):
    data = load_dataset(models_dir / "fashion_val.npz", limit=90)
    assert isinstance(data.x, LazyArray)
    model = str(models_dir / "fashion_resnet.onnx")
    other = str(models_dir / "fashion_vgg.onnx")
    streamed = validate_models(model, other, data, provider="cpu", batch_size=7, workers=2)
    eager = validate_models(model, other, Dataset(np.asarray(data.x), data.y), provider="cpu",
                            batch_size=90)
    for key in ("samples", "accuracy_original", "accuracy_pruned", "agreement"):
        assert streamed[key] == eager[key], key
    for name, stats in eager["outputs"].items():
        for stat, value in stats.items():
            assert streamed["outputs"][name][stat] == pytest.approx(value, rel=1e-9, abs=1e-12)
