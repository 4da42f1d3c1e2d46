"""Property tests: random CNN graphs mixing every coupling pattern, random plans, full proof."""

from __future__ import annotations

import numpy as np
from archs import Builder, check_prune, random_keep
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onnxprune.analysis.groups import analyze_channels

def _settings(examples: int):
    return settings(derandomize=True, deadline=None, database=None, max_examples=examples,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
BLOCKS = ["conv", "residual", "concat", "split", "depthwise", "se", "pool", "act", "bn_act",
          "slice", "resize", "transpose_matmul"]
ACTS = ["Relu", "Sigmoid", "HardSwish", "LeakyRelu", "Tanh", "Softplus"]


def _block(b: Builder, draw, kind: str, y: str, c: int, hw: int) -> tuple[str, int, int]:
    width = draw(st.integers(2, 8))
    if kind == "conv":
        k = draw(st.sampled_from([1, 3]))
        return b.conv(y, c, width, k=k, bias=draw(st.booleans())), width, hw
    if kind == "residual":
        mid = b.op("Relu", [b.conv(y, c, width, k=1)])
        return b.op("Add", [y, b.bn(b.conv(mid, width, c), c)]), c, hw
    if kind == "concat":
        branch = b.op(draw(st.sampled_from(ACTS)), [b.conv(y, c, width)])
        parts = [y, branch] if draw(st.booleans()) else [branch, y]
        return b.op("Concat", parts, axis=1), c + width, hw
    if kind == "split" and c >= 2:
        first = draw(st.integers(1, c - 1))
        a, d = b.op("Split", [y, b.const_i64([first, c - first])], outputs=2, axis=1)
        return b.op("Concat", [b.conv(d, c - first, c - first, k=1), a], axis=1), c, hw
    if kind == "depthwise":
        return b.op("Relu", [b.bn(b.conv(y, c, c, group=c), c)]), c, hw
    if kind == "se":
        s = b.op("GlobalAveragePool", [y])
        s = b.op("Relu", [b.conv(s, c, max(c // 2, 1), k=1)])
        gate = b.op(draw(st.sampled_from(["Sigmoid", "HardSigmoid"])),
                    [b.conv(s, max(c // 2, 1), c, k=1)])
        return b.op("Mul", [y, gate]), c, hw
    if kind == "pool" and hw >= 2:
        op = draw(st.sampled_from(["MaxPool", "AveragePool"]))
        return b.op(op, [y], kernel_shape=[2, 2], strides=[2, 2]), c, hw // 2
    if kind == "bn_act":
        return b.op(draw(st.sampled_from(ACTS)), [b.bn(y, c)]), c, hw
    if kind == "slice" and c >= 2:
        lo = draw(st.integers(0, c - 2))
        hi = draw(st.integers(lo + 1, c))
        s = b.op("Slice", [y, b.const_i64([lo]), b.const_i64([hi]), b.const_i64([1])])
        return s, hi - lo, hw
    if kind == "resize" and hw <= 4:
        scales = b.init(np.array([1, 1, 2, 2], np.float32), "scales")
        roi = b.init(np.zeros(0, np.float32), "roi")
        return b.op("Resize", [y, roi, scales], mode="nearest"), c, hw * 2
    if kind == "transpose_matmul":
        t = b.op("Transpose", [y], perm=[0, 2, 3, 1])
        t = b.op("MatMul", [t, b.weight(c, width)])
        return b.op("Transpose", [t], perm=[0, 3, 1, 2]), width, hw
    return b.op(draw(st.sampled_from(ACTS)), [y]), c, hw


def _head(b: Builder, draw, y: str, c: int, hw: int) -> str:
    kind = draw(st.sampled_from(["gap_gemm", "flatten_gemm", "conv", "reduce_gemm"]))
    if kind == "gap_gemm":
        return b.gemm(b.op("Flatten", [b.op("GlobalAveragePool", [y])]), c, 3)
    if kind == "flatten_gemm":
        return b.gemm(b.op("Flatten", [y]), c * hw * hw, 3)
    if kind == "reduce_gemm":
        return b.gemm(b.op("ReduceMean", [y], axes=[2, 3], keepdims=0), c, 3)
    return b.conv(y, c, 3, k=1)


@st.composite
def cnn_graphs(draw):
    b = Builder(draw(st.integers(0, 2**16)))
    c, hw = draw(st.integers(2, 6)), draw(st.sampled_from([2, 4]))
    x = b.input("x", [1, 3, hw, hw])
    y = b.op("Relu", [b.conv(x, 3, c)])
    for _ in range(draw(st.integers(1, 5))):
        y, c, hw = _block(b, draw, draw(st.sampled_from(BLOCKS)), y, c, hw)
    return b.model([_head(b, draw, y, c, hw)])


@_settings(250)
@given(model=cnn_graphs(), plan_seed=st.integers(0, 2**16))
def test_random_cnn_random_plan(model, plan_seed):
    analysis = analyze_channels(model)
    assert analysis.groups[0].prunable or analysis.groups[0].reason
    keep = random_keep(analysis, np.random.default_rng(plan_seed))
    check_prune(model, keep, analysis, seed=plan_seed)


@st.composite
def mlp_graphs(draw):
    b = Builder(draw(st.integers(0, 2**16)))
    tokens, d = draw(st.integers(1, 3)), draw(st.integers(2, 6))
    x = b.input("x", [1, tokens, d])
    y = b.op("MatMul", [x, b.weight(d, d)])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["mlp", "residual_mlp", "act", "bias"]))
        hidden = draw(st.integers(2, 8))
        if kind in ("mlp", "residual_mlp"):
            h = b.op(draw(st.sampled_from(ACTS)), [b.op("MatMul", [y, b.weight(d, hidden)])])
            z = b.op("MatMul", [h, b.weight(hidden, d)])
            y = b.op("Add", [y, z]) if kind == "residual_mlp" else z
        elif kind == "bias":
            y = b.op("Add", [y, b.init(np.linspace(-1, 1, d).astype(np.float32), "b")])
        else:
            y = b.op(draw(st.sampled_from(ACTS)), [y])
    return b.model([b.op("MatMul", [y, b.weight(d, 3)])])


@_settings(100)
@given(model=mlp_graphs(), plan_seed=st.integers(0, 2**16))
def test_random_mlp_random_plan(model, plan_seed):
    analysis = analyze_channels(model)
    keep = random_keep(analysis, np.random.default_rng(plan_seed))
    check_prune(model, keep, analysis, seed=plan_seed)
