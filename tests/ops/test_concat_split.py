"""Concat, Split and Slice along the channel axis: offsets, fixed sizes, bounds."""

from __future__ import annotations

import numpy as np
import pytest
from archs import Builder, check_random_plans, head, stem

from onnxprune.analysis.groups import analyze_channels


def test_concat_offsets():
    b = Builder(1)
    x = b.input("x", [1, 3, 4, 4])
    p = b.conv(x, 3, 4)
    q = b.conv(x, 3, 3)
    c = b.op("Concat", [p, q], axis=1)
    m = b.model([head(b, c, 7)])
    a = check_random_plans(m, plans=6)
    assert [(g.id, g.channels, g.offset) for g in a.groups[:2]] == [(p, 4, 0), (q, 3, 4)]
    (read,) = [r for r in a.reads if r.node == m.graph.node[-1].name]
    assert a.channels(read.ids).tolist() == list(range(7))  # p's channels, then q's


def test_concat_with_fixed_input():
    b = Builder(2)
    x = b.input("x", [1, 3, 4, 4])
    p = b.op("Relu", [b.conv(x, 3, 4)])
    c = b.op("Concat", [x, p], axis=1)  # the graph input's 3 channels are fixed
    m = b.model([head(b, c, 7)])
    a = check_random_plans(m, plans=4)
    assert a.groups[0].channels == 4 and a.groups[0].prunable
    (read,) = [r for r in a.reads if r.node == m.graph.node[-1].name]
    assert a.channels(read.ids).tolist() == [-1, -1, -1, 0, 1, 2, 3]


def test_concat_along_other_axis_couples():
    b = Builder(3)
    x = b.input("x", [1, 3, 4, 4])
    p, q = b.conv(x, 3, 5), b.conv(x, 3, 5)
    c = b.op("Concat", [p, q], axis=2)  # (1, 5, 8, 4)
    m = b.model([head(b, c, 5)])
    a = check_random_plans(m, plans=4)
    assert len(a.groups[0].sources) == 2


@pytest.mark.parametrize("opset,style", [(11, "attr"), (13, "input"), (18, "num_outputs")])
def test_split_sizes_fixed(opset, style):
    b = Builder(opset)
    y = stem(b, 7)
    if style == "attr":
        parts = b.op("Split", [y], outputs=2, axis=1, split=[3, 4])
    elif style == "input":
        parts = b.op("Split", [y, b.const_i64([3, 4])], outputs=2, axis=1)
        sizes = (3, 4)
    else:
        parts = b.op("Split", [y], outputs=2, axis=1, num_outputs=2)
    sizes = (4, 3) if style == "num_outputs" else (3, 4)
    outs = [head(b, part, size) for part, size in zip(parts, sizes)]
    m = b.model([b.op("Add", outs)], opset=opset)
    a = check_random_plans(m, plans=6, seed=opset)
    assert a.groups[0].channels == 7 and a.groups[0].prunable


def test_split_along_other_axis():
    b = Builder(4)
    y = stem(b, 5)
    parts = b.op("Split", [y, b.const_i64([1, 3])], outputs=2, axis=2)
    m = b.model([head(b, b.op("Concat", parts, axis=2), 5)])
    a = check_random_plans(m, plans=3)
    assert a.groups[0].prunable


@pytest.mark.parametrize("start,end", [(1, 5), (0, 3), (2, 100), (-4, -1)])
def test_slice_along_channels(start, end):
    b = Builder(5)
    y = stem(b, 7)
    s = b.op("Slice", [y, b.const_i64([start]), b.const_i64([end]), b.const_i64([1])])
    size = len(range(7)[start:end])
    m = b.model([head(b, s, size)])
    a = check_random_plans(m, plans=5)
    assert a.groups[0].channels == 7 and a.groups[0].prunable


def test_slice_spatial_and_strided_channel_slice():
    b = Builder(6)
    y = stem(b, 6)
    s = b.op("Slice", [y, b.const_i64([1]), b.const_i64([3]), b.const_i64([2])])
    m = b.model([head(b, s, 6)])
    check_random_plans(m, plans=3)
    b = Builder(6)
    y = stem(b, 6)
    s = b.op("Slice", [y, b.const_i64([0]), b.const_i64([6]), b.const_i64([1]),
                       b.const_i64([2])])
    m = b.model([head(b, s, 3)])
    a = analyze_channels(m)
    assert not a.groups[0].prunable and "strided slice" in a.groups[0].reason
