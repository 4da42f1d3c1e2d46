"""The refit scores' sampled im2col rows equal F.unfold's rows (issue 13: no whole-batch unfold)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from onnxprune.gates.refit_select import _sampled_columns


@pytest.mark.parametrize("attrs", [
    {},
    {"pads": [1, 1, 1, 1], "strides": [2, 2]},
    {"pads": [0, 2, 1, 0], "strides": [1, 2], "dilations": [2, 1]},
])
@pytest.mark.parametrize("max_rows", [10 ** 6, 37])
def test_sampled_rows_are_the_unfolded_rows(attrs, max_rows):
    x = torch.randn(3, 4, 9, 11, generator=torch.Generator().manual_seed(0))
    kernel = (3, 2)
    got = _sampled_columns(x, kernel, attrs, torch.Generator().manual_seed(5), max_rows)
    pads = attrs.get("pads", [0, 0, 0, 0])
    padded = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
    cols = F.unfold(padded, kernel, dilation=tuple(attrs.get("dilations", [1, 1])),
                    stride=tuple(attrs.get("strides", [1, 1])))
    cols = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    if len(cols) > max_rows:
        cols = cols[torch.randperm(len(cols), generator=torch.Generator().manual_seed(5))
                    [:max_rows]]
    assert got.shape == cols.shape and torch.equal(got, cols)
