"""Flatten/Reshape/Transpose/Squeeze/Unsqueeze/Expand/Tile: the channel axis is followed."""

from __future__ import annotations

import numpy as np
import pytest
from archs import Builder, check_random_plans, head, stem

from onnxprune.analysis.groups import analyze_channels


def _gemm_members(a, node_name):
    return [mem for mem in a.members if mem.node == node_name and mem.index == 1
            and mem.axis == 1]


@pytest.mark.parametrize("how", ["flatten", "reshape"])
def test_flatten_into_gemm_maps_channel_to_hw_block(how):
    b = Builder(1)
    y = b.op("MaxPool", [stem(b, 5)], kernel_shape=[2, 2], strides=[2, 2])  # (1, 5, 2, 2)
    if how == "flatten":
        f = b.op("Flatten", [y], axis=1)
    else:
        f = b.op("Reshape", [y, b.const_i64([1, -1])])
    out = b.gemm(f, 20, 3)
    m = b.model([out])
    a = check_random_plans(m, plans=5, batches=(1,))
    gemm = m.graph.node[-1].name
    (member,) = _gemm_members(a, gemm)
    # the 20 input features are 5 channels x (2x2) blocks, in C order
    assert a.channels(member.ids).tolist() == np.repeat(np.arange(5), 4).tolist()
    assert member.axis == 1  # transB=1: weight is (out, in)


def test_flatten_batch_2_reshape_keeps_dynamic_batch():
    b = Builder(2)
    x = b.input("x", ["N", 3, 4, 4])
    y = b.op("Relu", [b.conv(x, 3, 4)])
    f = b.op("Reshape", [y, b.const_i64([0, -1])])
    m = b.model([b.gemm(f, 64, 3)])
    check_random_plans(m, plans=3, batches=(1, 2))


def test_transpose_to_nhwc_then_matmul():
    b = Builder(3)
    y = b.op("Transpose", [stem(b, 6)], perm=[0, 2, 3, 1])  # (1, 4, 4, 6)
    y = b.op("MatMul", [y, b.weight(6, 5)])
    y = b.op("Transpose", [b.op("Relu", [y])], perm=[0, 3, 1, 2])
    m = b.model([head(b, y, 5)])
    a = check_random_plans(m, plans=4)
    assert [(g.channels, g.prunable) for g in a.groups] == [(6, True), (5, True), (3, False)]


def test_squeeze_unsqueeze_track_the_axis():
    b = Builder(4)
    y = b.op("GlobalAveragePool", [stem(b, 6)])
    s = b.op("Squeeze", [y, b.const_i64([2, 3])])  # (1, 6)
    g = b.op("Relu", [b.gemm(s, 6, 4)])
    u = b.op("Unsqueeze", [g, b.const_i64([-1, 2])])  # (1, 4, 1, 1)
    m = b.model([head(b, u, 4)])
    a = check_random_plans(m, plans=4)
    assert [(g.channels, g.prunable) for g in a.groups] == [(6, True), (4, True), (3, False)]


def test_squeeze_opset11_attribute_axes():
    b = Builder(5)
    y = b.op("GlobalAveragePool", [stem(b, 6)])
    s = b.op("Squeeze", [y], axes=[3, 2])
    m = b.model([b.gemm(s, 6, 3)], opset=11)
    a = check_random_plans(m, plans=3)
    assert a.groups[0].prunable


def test_squeeze_the_channel_axis_is_barrier():
    b = Builder(6)
    x = b.input("x", [1, 3, 4, 4])
    y = b.conv(x, 3, 1)
    y = b.op("Squeeze", [y, b.const_i64([1])])
    m = b.model([b.op("MatMul", [y, b.weight(4, 2)])])
    a = analyze_channels(m)
    assert not a.groups[0].prunable and "squeezes the channel axis" in a.groups[0].reason


@pytest.mark.parametrize("groups", [2, 3])
def test_channel_shuffle_couples_positions(groups):
    b = Builder(groups)
    c = 6
    y = stem(b, c)
    r = b.op("Reshape", [y, b.const_i64([1, groups, c // groups, 4, 4])])
    t = b.op("Transpose", [r], perm=[0, 2, 1, 3, 4])
    s = b.op("Reshape", [t, b.const_i64([1, c, 4, 4])])
    m = b.model([head(b, s, c)])
    a = analyze_channels(m)
    # the (groups, c // groups) grid is pruned along its longer axis: positions sharing that
    # index are coupled, so the shuffle stays a shuffle
    assert a.groups[0].channels == max(groups, c // groups) and a.groups[0].prunable
    check_random_plans(m, plans=4)


def test_expand_and_tile_pass_channels():
    b = Builder(7)
    y = b.op("GlobalAveragePool", [stem(b, 6)])  # (1, 6, 1, 1)
    e = b.op("Expand", [y, b.const_i64([1, 6, 4, 4])])
    t = b.op("Tile", [b.op("Relu", [e]), b.const_i64([1, 1, 2, 1])])
    m = b.model([head(b, t, 6)])
    a = check_random_plans(m, plans=4)
    assert a.groups[0].prunable


def test_reshape_mixing_channels_with_batch_is_barrier():
    b = Builder(8)
    y = stem(b, 4)
    r = b.op("Reshape", [y, b.const_i64([4, 1, 4, 4])])
    m = b.model([b.conv(r, 1, 2, k=1)])
    a = analyze_channels(m)
    assert not a.groups[0].prunable and "batch" in a.groups[0].reason
