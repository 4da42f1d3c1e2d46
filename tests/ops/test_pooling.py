"""Pooling keeps channels; reductions and softmax over the channel axis are barriers."""

from __future__ import annotations

import numpy as np
import pytest
from archs import Builder, check_random_plans, head, stem

from onnxprune.analysis.groups import analyze_channels


@pytest.mark.parametrize("op,attrs", [
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    ("GlobalAveragePool", {}),
    ("GlobalMaxPool", {}),
    ("LpPool", {"kernel_shape": [2, 2]}),
])
def test_pooling_passes_channels(op, attrs):
    b = Builder(len(op))
    y = b.op(op, [stem(b, 6)], **attrs)
    m = b.model([head(b, y, 6)])
    a = check_random_plans(m, plans=3)
    assert a.groups[0].prunable


@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax", "ReduceSum"])
def test_reduce_over_space_passes_channels(op, keepdims):
    b = Builder(keepdims)
    y = stem(b, 6)
    axes = [2, 3]
    inputs = [y, b.const_i64(axes)] if op == "ReduceSum" else [y]
    attrs = {} if op == "ReduceSum" else {"axes": axes}
    y = b.op(op, inputs, keepdims=keepdims, **attrs)
    if not keepdims:
        y = b.gemm(y, 6, 3)
    else:
        y = head(b, y, 6)
    m = b.model([y])
    a = check_random_plans(m, plans=3)
    assert a.groups[0].prunable


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax"])
def test_reduce_over_channels_is_barrier(op):
    b = Builder(1)
    y = b.op(op, [stem(b, 6)], axes=[1], keepdims=1)
    m = b.model([y])
    a = analyze_channels(m)
    assert not a.groups[0].prunable and "reduces over the channel axis" in a.groups[0].reason
    assert a.barriers == [{"op": op, "node": m.graph.node[-1].name,
                           "reason": "reduces over the channel axis"}]
    check_random_plans(m, plans=1)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_over_channels_is_barrier(op):
    b = Builder(2)
    y = b.op(op, [stem(b, 6)], axis=1)
    m = b.model([head(b, y, 6)])
    a = analyze_channels(m)
    assert not a.groups[0].prunable and op in a.groups[0].reason
    check_random_plans(m, plans=1)


def test_softmax_over_space_passes_channels():
    b = Builder(3)
    y = b.op("Softmax", [stem(b, 6)], axis=-1)
    m = b.model([head(b, y, 6)])
    a = check_random_plans(m, plans=3)
    assert a.groups[0].prunable


def test_softmax_opset11_coerces_to_2d():
    b = Builder(4)
    y = b.op("Softmax", [stem(b, 6)], axis=2)  # opset < 13: flattens axes >= 2 only
    m = b.model([head(b, y, 6)], opset=11)
    a = check_random_plans(m, plans=2)
    assert a.groups[0].prunable
    b = Builder(4)
    y = b.op("Softmax", [stem(b, 6)])  # default axis 1 at opset 11 covers the channels
    m = b.model([head(b, y, 6)], opset=11)
    assert not analyze_channels(m).groups[0].prunable


def test_argmax_is_barrier():
    b = Builder(5)
    y = b.op("ArgMax", [stem(b, 6)], axis=2, keepdims=1)
    m = b.model([b.op("Cast", [y], to=1)])
    assert not analyze_channels(m).groups[0].prunable
