"""Gemm and MatMul rules: sources and readers of features; non-constant weights are barriers."""

from __future__ import annotations

import numpy as np
import pytest
from archs import Builder, check_random_plans

from onnxprune.analysis.groups import analyze_channels


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_chain(trans_b):
    b = Builder(trans_b)
    x = b.input("x", [1, 6])
    y = b.op("Relu", [b.gemm(x, 6, 8, trans_b)])
    y = b.op("Tanh", [b.gemm(y, 8, 5, trans_b)])
    m = b.model([b.gemm(y, 5, 3, trans_b)])
    a = check_random_plans(m, plans=5, batches=(1, 2))
    assert [(g.channels, g.prunable) for g in a.groups] == [(8, True), (5, True), (3, False)]


def test_gemm_scalar_bias_and_no_bias():
    b = Builder(2)
    x = b.input("x", [1, 6])
    y = b.op("Gemm", [x, b.weight(7, 6), b.init(np.float32(0.5), "c")], transB=1, alpha=0.5)
    y = b.op("Gemm", [b.op("Relu", [y]), b.weight(7, 4)], transA=0)
    m = b.model([y])
    a = check_random_plans(m, plans=4)
    assert a.groups[0].prunable


def test_gemm_trans_a_is_barrier():
    b = Builder(3)
    x = b.input("x", [1, 6])
    y = b.op("Transpose", [b.gemm(x, 6, 4)], perm=[1, 0])  # features now on axis 0
    y = b.op("Gemm", [y, b.weight(4, 3)], transA=1)
    m = b.model([y])
    a = analyze_channels(m)
    assert not a.groups[0].prunable and "transA=1" in a.groups[0].reason
    check_random_plans(m, plans=1)


@pytest.mark.parametrize("rank", [2, 3, 4])
def test_matmul_chain(rank):
    b = Builder(rank)
    lead = [1, 3, 2][: rank - 1]
    x = b.input("x", [*lead, 6])
    y = b.op("MatMul", [x, b.weight(6, 8)])
    y = b.op("Relu", [b.op("Add", [y, b.init(np.linspace(-1, 1, 8).astype(np.float32), "b")])])
    y = b.op("MatMul", [y, b.weight(8, 4)])
    m = b.model([y])
    a = check_random_plans(m, plans=4)
    assert [(g.channels, g.prunable) for g in a.groups] == [(8, True), (4, False)]


def test_matmul_by_computed_tensor_is_barrier():
    b = Builder(5)
    x = b.input("x", [1, 4, 6])
    q = b.op("MatMul", [x, b.weight(6, 6)])
    k = b.op("MatMul", [x, b.weight(6, 6)])
    att = b.op("MatMul", [q, b.op("Transpose", [k], perm=[0, 2, 1])])  # contracts channels
    m = b.model([att])
    a = analyze_channels(m)
    assert not any(g.prunable for g in a.groups)
    assert any("MatMul" == x["op"] for x in a.barriers)
    check_random_plans(m, plans=1)
