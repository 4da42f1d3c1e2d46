"""Shape, Constant and Gather: run-time shapes follow pruning; gathers along channels block."""

from __future__ import annotations

import numpy as np
import pytest
from archs import Builder, check_random_plans, head, stem

from onnxprune.analysis.groups import analyze_channels


def test_runtime_shape_feeds_reshape():
    """Reshape(y, Shape(y)) and ConstantOfShape follow the pruned channel count at run time."""
    b = Builder(1)
    y = stem(b, 6)
    shape = b.op("Shape", [y])
    r = b.op("Reshape", [b.op("Sigmoid", [y]), shape])
    m = b.model([head(b, r, 6)])
    a = check_random_plans(m, plans=4)
    assert a.groups[0].prunable


def test_gather_along_space_passes_channels():
    b = Builder(2)
    y = stem(b, 6)
    g = b.op("Gather", [y, b.const_i64([0, 2])], axis=3)  # (1, 6, 4, 2)
    g2 = b.op("Gather", [g, b.const_i64(1)], axis=2)  # scalar index: (1, 6, 2)
    m = b.model([b.op("MatMul", [b.op("Transpose", [g2], perm=[0, 2, 1]), b.weight(6, 3)])])
    a = check_random_plans(m, plans=4)
    assert a.groups[0].prunable


def test_gather_along_channels_is_barrier():
    b = Builder(3)
    y = stem(b, 6)
    g = b.op("Gather", [y, b.const_i64([0, 2])], axis=1)
    m = b.model([head(b, g, 2)])
    a = analyze_channels(m)
    assert not a.groups[0].prunable and "gathers along the channel axis" in a.groups[0].reason
    check_random_plans(m, plans=1)


def test_constant_node_weights():
    b = Builder(4)
    x = b.input("x", [1, 3, 4, 4])
    w = b.op("Constant", [], value=__import__("onnx").numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((5, 3, 1, 1)).astype(np.float32)))
    y = b.op("Relu", [b.op("Conv", [x, w], kernel_shape=[1, 1])])
    m = b.model([head(b, y, 5)])
    a = check_random_plans(m, plans=4)
    assert a.groups[0].prunable


def _size_as_value(kind: str):
    b = Builder(5)
    y = stem(b, 6)
    if kind == "size":
        count = b.op("Size", [y])
    elif kind == "reduceprod":
        count = b.op("ReduceProd", [b.op("Shape", [y])], keepdims=0)
    else:  # the channel entry of the shape
        count = b.op("Gather", [b.op("Shape", [y]), b.const_i64(1)], axis=0)
    scaled = b.op("Mul", [y, b.op("Cast", [count], to=1)])
    return b.model([head(b, scaled, 6)])


@pytest.mark.parametrize("kind", ["size", "reduceprod", "channel_entry"])
def test_shape_value_reaching_arithmetic_is_barrier(kind):
    """Mul(y, Cast(Size(y))): pruning y would change the value, so y's channels are fixed."""
    m = _size_as_value(kind)
    a = analyze_channels(m)
    assert not a.groups[0].prunable and "as a value" in a.groups[0].reason
    assert any(b["op"] in ("Size", "Shape") for b in a.barriers)
    check_random_plans(m, plans=2)


def test_shape_entries_other_than_channels_are_values_freely():
    """Shape(y)[2] (a spatial size) used as a value does not depend on the channel count."""
    b = Builder(6)
    y = stem(b, 6)
    h = b.op("Gather", [b.op("Shape", [y]), b.const_i64(2)], axis=0)
    scaled = b.op("Mul", [y, b.op("Cast", [h], to=1)])
    m = b.model([head(b, scaled, 6)])
    a = check_random_plans(m, plans=3)
    assert a.groups[0].prunable and not a.barriers
