"""Element-wise rules: unary ops pass channels, broadcasting ops couple or slice constants."""

from __future__ import annotations

import numpy as np
import pytest
from archs import Builder, check_random_plans, head, stem

from onnxprune.analysis.groups import analyze_channels

UNARY = ["Relu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "LeakyRelu", "Elu", "Softplus",
         "Gelu", "Identity", "Neg", "Abs", "Mish", "Softsign"]


@pytest.mark.parametrize("op", UNARY)
def test_unary_passes_channels(op):
    b = Builder(len(op))
    y = b.op(op, [stem(b, 5, relu=False)])
    m = b.model([head(b, y, 5)], opset=20 if op == "Gelu" else 18 if op == "Mish" else 17)
    a = check_random_plans(m, plans=2)
    assert a.groups[0].channels == 5 and a.groups[0].prunable


def test_clip_with_scalar_bounds_and_dropout():
    b = Builder(1)
    y = stem(b, 5, relu=False)
    lo, hi = b.init(np.float32(0.0), "lo"), b.init(np.float32(6.0), "hi")
    y = b.op("Clip", [y, lo, hi])
    y = b.op("Dropout", [y])
    m = b.model([head(b, y, 5)])
    a = check_random_plans(m, plans=3)
    assert a.groups[0].prunable


def test_residual_add_merges_groups():
    b = Builder(2)
    y = stem(b, 6)
    z = b.op("Relu", [b.conv(y, 6, 6)])
    w = b.conv(z, 6, 6)
    s = b.op("Add", [y, w])
    m = b.model([head(b, b.op("Relu", [s]), 6)])
    a = check_random_plans(m, plans=5)
    merged = a.groups[0]
    assert len(merged.sources) == 2 and merged.channels == 6 and merged.prunable
    assert merged.sources[1] == w  # both the stem and the second conv
    assert [g.channels for g in a.groups] == [6, 6, 3]


def test_residual_chain_merges_three_sources():
    b = Builder(3)
    y = stem(b, 4)
    for _ in range(2):
        y = b.op("Add", [y, b.conv(b.op("Relu", [b.conv(y, 4, 3)]), 3, 4)])
    m = b.model([head(b, y, 4)])
    a = check_random_plans(m, plans=4)
    assert len(a.groups[0].sources) == 3


@pytest.mark.parametrize("op", ["Mul", "Add", "Sub", "Div", "Max", "Min", "PRelu"])
def test_per_channel_constant_is_sliced(op):
    b = Builder(4)
    y = stem(b, 6, relu=False)
    shape = (6, 1, 1) if op != "Max" else (1, 6, 1, 1)
    const = b.init(np.random.default_rng(0).uniform(0.5, 2, shape).astype(np.float32), "k")
    y = b.op(op, [y, const] if op != "Sub" else [const, y])
    m = b.model([head(b, y, 6)])
    a = check_random_plans(m, plans=4)
    assert a.groups[0].prunable
    assert any(mem.node == m.graph.node[1].name for mem in a.members)


def test_scalar_and_spatial_constants_broadcast():
    b = Builder(5)
    y = stem(b, 6, relu=False)
    y = b.op("Mul", [y, b.init(np.float32(2.0), "s")])
    y = b.op("Add", [y, b.init(np.ones((1, 1, 4, 4), np.float32), "sp")])
    m = b.model([head(b, y, 6)])
    a = check_random_plans(m, plans=3)
    assert a.groups[0].prunable


def test_se_couples_expand_conv_with_main_map():
    """GlobalAveragePool -> Conv -> Relu -> Conv -> Sigmoid -> Mul: the expand conv joins."""
    b = Builder(6)
    y = stem(b, 8)
    s = b.op("GlobalAveragePool", [y])
    s = b.op("Relu", [b.conv(s, 8, 2, k=1)])
    expand = b.conv(s, 2, 8, k=1)
    y = b.op("Mul", [y, b.op("Sigmoid", [expand])])
    m = b.model([head(b, y, 8)])
    a = check_random_plans(m, plans=5)
    main = a.groups[0]
    assert expand in main.sources and main.channels == 8 and main.prunable
    assert [g.channels for g in a.groups] == [8, 2, 3]


def test_computed_per_channel_tensor_is_barrier():
    b = Builder(7)
    x = b.input("x", [1, 3, 4, 4])
    y = b.conv(x, 3, 3)
    y = b.op("Mul", [y, x])  # x is a graph input over the channel axis: fixed channels
    m = b.model([head(b, y, 3)])
    a = analyze_channels(m)
    assert not a.groups[0].prunable
    assert any(x["op"] == "Mul" for x in a.barriers)
    check_random_plans(m, plans=1)


def test_broadcast_along_channels_is_barrier():
    b = Builder(8)
    y = stem(b, 1, relu=False)  # 1 channel broadcast against 4
    z = b.conv(b.input("x2", [1, 3, 4, 4]), 3, 4)
    s = b.op("Add", [y, z])
    m = b.model([head(b, s, 4)])
    a = analyze_channels(m)
    assert not any(g.prunable for g in a.groups[:2])
    check_random_plans(m, plans=2)
