"""Resize/Upsample and Pad: channels pass through unless the channel axis changes."""

from __future__ import annotations

import numpy as np
import pytest
from archs import Builder, check_random_plans, head, stem
from onnx import TensorProto, helper

from onnxprune.analysis.groups import analyze_channels


def _empty(b):
    b.inits.append(helper.make_tensor(b.name("roi"), TensorProto.FLOAT, [0], []))
    return b.inits[-1].name


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_by_scales(mode):
    b = Builder(1)
    y = stem(b, 6)
    scales = b.init(np.array([1, 1, 2, 2], np.float32), "scales")
    r = b.op("Resize", [y, _empty(b), scales], mode=mode)
    m = b.model([head(b, r, 6)])
    a = check_random_plans(m, plans=4)
    assert a.groups[0].prunable


def test_resize_by_sizes_is_fixed():
    b = Builder(2)
    y = stem(b, 6)
    r = b.op("Resize", [y, _empty(b), "", b.const_i64([1, 6, 8, 8])], mode="nearest")
    m = b.model([head(b, r, 6)])
    a = check_random_plans(m, plans=4)
    assert a.groups[0].prunable
    assert any(f.node == m.graph.node[2].name for f in a.fixups)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_spatial(mode):
    b = Builder(3)
    y = stem(b, 5)
    p = b.op("Pad", [y, b.const_i64([0, 0, 1, 2, 0, 0, 2, 1])], mode=mode)
    m = b.model([head(b, p, 5)])
    a = check_random_plans(m, plans=3)
    assert a.groups[0].prunable


def test_pad_channel_axis_is_barrier():
    b = Builder(4)
    y = stem(b, 5)
    p = b.op("Pad", [y, b.const_i64([0, 1, 0, 0, 0, 0, 0, 0])])
    m = b.model([head(b, p, 6)])
    a = analyze_channels(m)
    assert not a.groups[0].prunable and "pads the channel axis" in a.groups[0].reason
    check_random_plans(m, plans=1)
