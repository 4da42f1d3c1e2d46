"""Normalization rules: per-channel norms slice parameters; norms over channels are barriers."""

from __future__ import annotations

import numpy as np
import pytest
from archs import Builder, check_random_plans, head, stem

from onnxprune.analysis.groups import analyze_channels


def test_batchnorm_params_sliced():
    b = Builder(1)
    y = b.op("Relu", [b.bn(stem(b, 6, relu=False), 6)])
    m = b.model([head(b, y, 6)])
    a = check_random_plans(m, plans=5)
    assert a.groups[0].prunable
    bn = [mem for mem in a.members if mem.node == m.graph.node[1].name]
    assert sorted(mem.index for mem in bn) == [1, 2, 3, 4]


def test_instance_norm_params_sliced():
    b = Builder(2)
    y = stem(b, 5)
    r = np.random.default_rng(0)
    y = b.op("InstanceNormalization", [y, b.init(r.uniform(0.5, 1.5, 5).astype(np.float32)),
                                       b.init(r.standard_normal(5).astype(np.float32))])
    m = b.model([head(b, y, 5)])
    a = check_random_plans(m, plans=4)
    assert a.groups[0].prunable


def test_layernorm_over_channels_is_barrier():
    b = Builder(3)
    x = b.input("x", [1, 4, 6])
    y = b.op("MatMul", [x, b.weight(6, 8)])
    r = np.random.default_rng(1)
    y = b.op("LayerNormalization", [y, b.init(r.uniform(0.5, 1.5, 8).astype(np.float32)),
                                    b.init(r.standard_normal(8).astype(np.float32))], axis=-1)
    m = b.model([b.op("MatMul", [y, b.weight(8, 3)])])
    a = analyze_channels(m)
    assert not a.groups[0].prunable
    assert "LayerNormalization" in a.groups[0].reason and "over the channel axis" in a.groups[0].reason
    assert a.barriers[0]["op"] == "LayerNormalization"
    check_random_plans(m, plans=1)


def test_layernorm_over_other_axis_passes_channels():
    b = Builder(4)
    y = stem(b, 5)  # NCHW; normalize over W only
    r = np.random.default_rng(2)
    y = b.op("LayerNormalization", [y, b.init(r.uniform(0.5, 1.5, 4).astype(np.float32)),
                                    b.init(r.standard_normal(4).astype(np.float32))], axis=3)
    m = b.model([head(b, y, 5)])
    a = check_random_plans(m, plans=3)
    assert a.groups[0].prunable


@pytest.mark.parametrize("op", ["LpNormalization", "LRN"])
def test_cross_channel_norms_are_barriers(op):
    b = Builder(5)
    y = stem(b, 4)
    attrs = {"size": 3} if op == "LRN" else {"axis": 1} if op == "LpNormalization" else {}
    y = b.op(op, [y], **attrs)
    m = b.model([head(b, y, 4)])
    a = analyze_channels(m)
    assert not a.groups[0].prunable and op in a.groups[0].reason
    check_random_plans(m, plans=1)
