"""Fixtures of the runtime tests: model files and npz data in tmp_path."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from runtime_models import (
    SIZE,
    conv_classifier,
    negated_weights,
    pruned_weights,
    rank4_output_model,
    reference_logits,
)


@pytest.fixture
def model_files(tmp_path):
    """Paths of the original, a pruned (4 of 6 channels), a negated and broken variants."""
    paths = {
        "original": conv_classifier(),
        "pruned": conv_classifier(pruned_weights([0, 2, 3, 5])),
        "negated": conv_classifier(negated_weights()),
        "renamed": conv_classifier(output_name="scores"),
        "rank4": rank4_output_model(),
        "dynamic": conv_classifier(spatial="S"),
    }
    out = {}
    for name, model in paths.items():
        path = tmp_path / f"{name}.onnx"
        onnx.save_model(model, str(path))
        out[name] = str(path)
    return out


@pytest.fixture
def npz_data(tmp_path):
    """20 samples of x [20, 3, 8, 8] labelled with the original model's own predictions."""
    x = np.random.default_rng(1).standard_normal((20, 3, SIZE, SIZE)).astype(np.float32)
    y = np.argmax(reference_logits(x), axis=1).astype(np.int64)
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=y)
    return str(path)
