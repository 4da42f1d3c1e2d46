"""Data-free inputs of a BN-folded graph: Gaussian noise drawn per sample, never stored (issue 13)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from onnxprune.compress_data import prepare_inputs
from onnxprune.lazydata import LazyArray, NoiseSource
from onnxprune.pipeline import CompressConfig


def test_noise_samples_are_the_same_in_any_subset_or_order():
    x = LazyArray(NoiseSource(50, (3, 4, 4), seed=7))
    whole = x[np.arange(50)]
    assert whole.shape == (50, 3, 4, 4) and whole.dtype == np.float32
    assert abs(float(whole.mean())) < 0.1 and abs(float(whole.std()) - 1.0) < 0.1
    part = x.subset(np.array([40, 3, 17]))
    np.testing.assert_array_equal(part[np.arange(3)], whole[[40, 3, 17]])
    np.testing.assert_array_equal(x[5], whole[5])
    other = LazyArray(NoiseSource(50, (3, 4, 4), seed=8))[np.arange(50)]
    assert not np.allclose(other, whole)
    assert not np.allclose(whole[0], whole[1])


def test_a_data_free_compress_keeps_no_array_of_its_inputs(tmp_path):
    model_path = Path(__file__).resolve().parent.parent / "models" / "resnet.onnx"
    config = CompressConfig(model=str(model_path), output=str(tmp_path / "o.onnx"), quiet=True)
    inputs = prepare_inputs(config, onnx.load(str(model_path)))
    assert isinstance(inputs.x, LazyArray) and isinstance(inputs.x.source, NoiseSource)
    assert len(inputs.x) + len(inputs.evaluation) == 512
    assert "drawn per sample" in inputs.mode
