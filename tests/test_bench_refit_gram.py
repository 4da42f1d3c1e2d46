"""tools/bench_refit_gram.py: both dtypes accumulate the same H (to float32 rounding) and the
module's dtype is restored afterwards."""

from __future__ import annotations

import numpy as np
import torch

import bench_refit_gram  # tools/ is put on sys.path by conftest.py
from archs import conv_classifier
from onnxprune.analysis.groups import analyze_channels
from onnxprune.gates import refit_select


def test_float32_and_float64_batches_accumulate_the_same_gram():
    model = conv_classifier(seed=11, hw=12, widths=(8, 6), classes=3)
    analysis = analyze_channels(model)
    data = np.random.default_rng(12).standard_normal((128, 3, 12, 12)).astype(np.float32)
    _, wide = bench_refit_gram.collect_seconds(model, analysis, data, torch.float64)
    _, narrow = bench_refit_gram.collect_seconds(model, analysis, data, torch.float32)
    assert refit_select.GRAM_DTYPE == torch.float32
    assert len(wide) == len(narrow) >= 2
    for a, b in zip(wide, narrow):
        assert a.dtype == b.dtype == torch.float64
        assert not torch.equal(a, b)  # the products were computed in different precisions
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-4 * float(a.abs().max()))
