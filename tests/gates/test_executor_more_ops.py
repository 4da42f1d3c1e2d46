"""The kernels of ``torch_ops_more`` against onnxruntime, one tiny graph per op and opset variant.

Random* ops cannot match ONNX Runtime's numbers (different generators), so their cases check
shape, dtype and the distribution's range or moments instead.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto

from onnxprune.gates.executor import TorchGraph
from test_executor import assert_matches, make, node, one, rand, run_ort

X4 = (2, 4, 6, 6)
HALVES = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49, -1.2], np.float32)


def specials():
    x = rand(3, 4)
    x[0, 1], x[1, 2], x[2, 0], x[2, 3] = np.nan, np.inf, -np.inf, np.inf
    return x


def ties(*shape):
    """Small integers as floats: many equal values, so tie-breaking is exercised."""
    return np.round(rand(*shape, low=-1.4, high=1.4)).astype(np.float32)


def u(dtype, *values):
    return np.array(values, dtype)


ROIS = np.array([[0, 0, 0, 5, 5], [1, 1.5, 0.5, 4.5, 3], [0, 2, 2, 2, 2], [1, -3, 1, 20, 4],
                 [0, 4, 4, 1, 1]], np.float32)

_ELEMENTWISE = {
    **{op: (lambda op=op: one(op, {"x": rand(2, 3, 4)})) for op in ("Sin", "Cos", "Softsign")},
    "Mish": lambda: one("Mish", {"x": rand(2, 3, 4) * 3}, opset=18),
    "Round": lambda: one("Round", {"x": HALVES}),
    "IsNaN": lambda: one("IsNaN", {"x": specials()}),
    "IsInf": lambda: one("IsInf", {"x": specials()}),
    "IsInf-negative": lambda: one("IsInf", {"x": specials()}, detect_positive=0),
    "IsInf-positive": lambda: one("IsInf", {"x": specials()}, detect_negative=0),
    "Xor": lambda: one("Xor", {"a": rand(2, 3) > 0, "b": rand(3) > 0}),
    "Celu": lambda: one("Celu", {"x": rand(2, 3, 4)}, opset=12, alpha=0.7),
    "Celu-default": lambda: one("Celu", {"x": rand(2, 3, 4)}, opset=12),
    "ThresholdedRelu": lambda: one("ThresholdedRelu", {"x": rand(2, 3, 4)}, opset=10, alpha=0.3),
    "ThresholdedRelu-default": lambda: one("ThresholdedRelu", {"x": rand(2, 3, 4)}, opset=10),
    "Shrink": lambda: one("Shrink", {"x": rand(2, 3, 4)}, lambd=0.6, bias=0.2),
    "Shrink-default": lambda: one("Shrink", {"x": rand(2, 3, 4)}),
    "Mod-int": lambda: one("Mod", {"a": np.array([[-7, 7, -8], [9, -4, 5]])},
                           {"b": np.array([3, -3, 5])}),
    "Mod-int-fmod": lambda: one("Mod", {"a": np.array([[-7, 7, -8], [9, -4, 5]], np.int32)},
                                {"b": np.array([3, -3, 5], np.int32)}, fmod=1),
    "Mod-float": lambda: one("Mod", {"a": rand(2, 3) * 5, "b": rand(3, low=0.5)}, fmod=1),
    "BitShift-left-u8": lambda: one("BitShift", {"x": u(np.uint8, 1, 3, 200, 17)},
                                    {"s": u(np.uint8, 1, 2, 1, 3)}, direction="LEFT"),
    "BitShift-right-u8": lambda: one("BitShift", {"x": u(np.uint8, 1, 3, 200, 255)},
                                     {"s": u(np.uint8, 1, 1, 3, 7)}, direction="RIGHT"),
    "BitShift-left-u32": lambda: one("BitShift", {"x": u(np.uint32, 1, 3, 2**31 + 9, 77)},
                                     {"s": u(np.uint32, 31, 2, 1, 0)}, direction="LEFT"),
    "BitShift-right-u32": lambda: one("BitShift", {"x": u(np.uint32, 2**32 - 1, 3, 2**31)},
                                      {"s": u(np.uint32, 4)}, direction="RIGHT"),
    "BitShift-left-u64": lambda: one("BitShift", {"x": u(np.uint64, 1, 2**63 + 5, 7)},
                                     {"s": u(np.uint64, 63, 1, 0)}, direction="LEFT"),
    "BitShift-right-u64": lambda: one("BitShift", {"x": u(np.uint64, 2**64 - 1, 2**63 + 5, 9)},
                                      {"s": u(np.uint64, 0, 3, 63)}, direction="RIGHT"),
}

_SHAPES = {
    "Size": lambda: one("Size", {"x": rand(2, 3, 4)}),
    "EyeLike": lambda: one("EyeLike", {"x": rand(3, 5)}, k=1),
    "EyeLike-int": lambda: one("EyeLike", {"x": rand(4, 3)}, k=-1, dtype=TensorProto.INT64),
    "EyeLike-default": lambda: one("EyeLike", {"x": np.zeros((3, 3), np.int32)}),
}

_REDUCTIONS = {}
for _op, _low in (("ReduceL1", -2.0), ("ReduceL2", -2.0), ("ReduceLogSum", 0.1),
                  ("ReduceLogSumExp", -2.0), ("ReduceProd", 0.5), ("ReduceSumSquare", -2.0)):
    _REDUCTIONS.update({
        _op: lambda op=_op, lo=_low: one(op, {"x": rand(*X4, low=lo)}, opset=13, axes=[2, 3],
                                         keepdims=0),
        f"{_op}-all": lambda op=_op, lo=_low: one(op, {"x": rand(2, 3, 4, low=lo)}, opset=13),
        f"{_op}-11-neg": lambda op=_op, lo=_low: one(op, {"x": rand(*X4, low=lo)}, opset=11,
                                                     axes=[-1]),
        f"{_op}-18": lambda op=_op, lo=_low: one(op, {"x": rand(*X4, low=lo)},
                                                 {"a": np.array([0, -2])}, opset=18, keepdims=0),
        f"{_op}-18-runtime": lambda op=_op, lo=_low: one(
            op, {"x": rand(*X4, low=lo), "a": np.array([1])}, opset=18),
        f"{_op}-18-all": lambda op=_op, lo=_low: one(op, {"x": rand(2, 3, 4, low=lo)}, opset=18,
                                                     keepdims=0),
        f"{_op}-18-noop": lambda op=_op, lo=_low: one(op, {"x": rand(2, 3, 4, low=lo)},
                                                      opset=18, noop_with_empty_axes=1),
    })
_REDUCTIONS["ReduceProd-int"] = lambda: one("ReduceProd", {"x": np.arange(1, 13).reshape(3, 4)
                                                            .astype(np.int32)}, opset=13, axes=[1])
_REDUCTIONS["ReduceSumSquare-int"] = lambda: one(
    "ReduceSumSquare", {"x": np.arange(-6, 6).reshape(3, 4)}, opset=13, axes=[0])

_ALONG_AXIS = {
    "ArgMax": lambda: one("ArgMax", {"x": rand(3, 4, 5)}),
    "ArgMax-axis": lambda: one("ArgMax", {"x": rand(3, 4, 5)}, axis=-1, keepdims=0),
    "ArgMax-ties": lambda: one("ArgMax", {"x": ties(4, 6)}, opset=12, axis=1),
    "ArgMax-last": lambda: one("ArgMax", {"x": ties(4, 6)}, opset=12, axis=1,
                               select_last_index=1),
    "ArgMin-ties": lambda: one("ArgMin", {"x": ties(5, 4)}, opset=12, keepdims=0),
    "ArgMin-last": lambda: one("ArgMin", {"x": ties(5, 4)}, opset=12, select_last_index=1),
    "ArgMax-int": lambda: one("ArgMax", {"x": np.array([[3, 1, 3], [0, 2, 2]])}, axis=1),
    "Hardmax": lambda: one("Hardmax", {"x": ties(2, 3, 4)}),
    "Hardmax-axis": lambda: one("Hardmax", {"x": rand(2, 3, 4)}, axis=1),
    "Hardmax-11": lambda: one("Hardmax", {"x": ties(2, 3, 4)}, opset=11),
    "Hardmax-11-axis": lambda: one("Hardmax", {"x": ties(2, 3, 4)}, opset=11, axis=2),
    "CumSum": lambda: one("CumSum", {"x": rand(3, 4, 5)}, {"a": np.array(1)}),
    "CumSum-exclusive-reverse": lambda: one("CumSum", {"x": rand(3, 4, 5)},
                                            {"a": np.array([-1], np.int32)}, exclusive=1,
                                            reverse=1),
    "CumSum-exclusive": lambda: one("CumSum", {"x": rand(3, 4)}, {"a": np.array(0)},
                                    exclusive=1),
    "CumSum-runtime-int": lambda: one("CumSum", {"x": np.arange(12, dtype=np.int32)
                                                 .reshape(3, 4), "a": np.array(0)}, reverse=1),
    "TopK-1": lambda: one("TopK", {"x": rand(3, 7)}, opset=1, n_out=2, k=3),
    "TopK": lambda: one("TopK", {"x": rand(3, 7, 2)}, {"k": np.array([4])}, n_out=2, axis=1),
    "TopK-smallest": lambda: one("TopK", {"x": rand(3, 7)}, {"k": np.array([2])}, opset=11,
                                 n_out=2, largest=0),
    "TopK-ties": lambda: one("TopK", {"x": ties(4, 9)}, {"k": np.array([5])}, n_out=2),
    "TopK-ties-smallest": lambda: one("TopK", {"x": ties(4, 9)}, {"k": np.array([5])}, n_out=2,
                                      largest=0),
    "TopK-runtime": lambda: one("TopK", {"x": rand(2, 6), "k": np.array([3])}, n_out=2),
}

_SPACE = {
    "DepthToSpace": lambda: one("DepthToSpace", {"x": rand(2, 8, 3, 4)}, opset=11, blocksize=2),
    "DepthToSpace-CRD": lambda: one("DepthToSpace", {"x": rand(2, 8, 3, 4)}, opset=11,
                                    blocksize=2, mode="CRD"),
    "DepthToSpace-1": lambda: one("DepthToSpace", {"x": rand(1, 18, 2, 2)}, opset=1,
                                  blocksize=3),
    "SpaceToDepth": lambda: one("SpaceToDepth", {"x": rand(2, 3, 4, 6)}, blocksize=2),
}

_POOLING = {
    "LpPool": lambda: one("LpPool", {"x": rand(*X4)}, kernel_shape=[3, 3]),
    "LpPool-p3": lambda: one("LpPool", {"x": rand(*X4)}, kernel_shape=[3, 2], strides=[2, 1],
                             pads=[1, 0, 1, 1], p=3),
    "LpPool-p1": lambda: one("LpPool", {"x": rand(*X4)}, kernel_shape=[2, 2], strides=[2, 2],
                             p=1),
    "LpPool-same": lambda: one("LpPool", {"x": rand(*X4)}, kernel_shape=[3, 3], strides=[2, 2],
                               auto_pad="SAME_UPPER"),
    "LpPool-1d": lambda: one("LpPool", {"x": rand(2, 3, 9)}, kernel_shape=[3], strides=[2]),
    "LpPool-18-dilation": lambda: one("LpPool", {"x": rand(*X4)}, opset=18, kernel_shape=[2, 2],
                                      dilations=[2, 2], p=2),
    "LpPool-18-ceil": lambda: one("LpPool", {"x": rand(2, 3, 7, 7)}, opset=18,
                                  kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
    "LpPool-18-ceil-pads": lambda: one("LpPool", {"x": rand(2, 3, 8, 8)}, opset=18,
                                       kernel_shape=[3, 3], strides=[3, 3], pads=[1, 1, 1, 1],
                                       ceil_mode=1),
    "GlobalLpPool": lambda: one("GlobalLpPool", {"x": rand(*X4)}),
    "GlobalLpPool-p3": lambda: one("GlobalLpPool", {"x": rand(2, 3, 5)}, p=3),
    "MaxRoiPool": lambda: one("MaxRoiPool", {"x": rand(2, 3, 6, 6)}, {"r": ROIS},
                              pooled_shape=[2, 3]),
    "MaxRoiPool-scale": lambda: one("MaxRoiPool", {"x": rand(2, 3, 6, 6),
                                                   "r": ROIS * np.float32([1, 2, 2, 2, 2])},
                                    pooled_shape=[3, 3], spatial_scale=0.5),
}

_NORMS = {
    "InstanceNormalization": lambda: one("InstanceNormalization", {"x": rand(*X4)},
                                         {"g": rand(4), "b": rand(4)}, epsilon=1e-3),
    "InstanceNormalization-3d": lambda: one("InstanceNormalization", {"x": rand(2, 3, 7)},
                                            {"g": rand(3), "b": rand(3)}),
    "GroupNormalization-18": lambda: one("GroupNormalization", {"x": rand(2, 6, 3, 3)},
                                         {"g": rand(3), "b": rand(3)}, opset=18, num_groups=3),
    "GroupNormalization-21": lambda: one("GroupNormalization", {"x": rand(2, 6, 3, 3)},
                                         {"g": rand(6), "b": rand(6)}, opset=21, num_groups=2,
                                         epsilon=1e-3),
    "LRN": lambda: one("LRN", {"x": rand(2, 7, 3, 3)}, size=5, alpha=0.02, beta=0.6, bias=1.5),
    "LpNormalization": lambda: one("LpNormalization", {"x": rand(2, 3, 4)}),
    "LpNormalization-p1": lambda: one("LpNormalization", {"x": rand(2, 3, 4)}, axis=1, p=1),
    "MeanVarianceNormalization": lambda: one("MeanVarianceNormalization", {"x": rand(*X4)}),
    "MeanVarianceNormalization-axes": lambda: one("MeanVarianceNormalization",
                                                  {"x": rand(*X4)}, axes=[1, 2, 3]),
}

MORE_CASES = {**_ELEMENTWISE, **_SHAPES, **_REDUCTIONS, **_ALONG_AXIS, **_SPACE, **_POOLING,
              **_NORMS}


@pytest.mark.parametrize("case", sorted(MORE_CASES))
def test_op_matches_onnxruntime(case):
    assert_matches(*MORE_CASES[case]())


def test_lpnormalization_keeps_an_all_zero_slice_zero():
    x = rand(2, 3, 4)
    x[1, 2] = 0.0
    model, feeds = one("LpNormalization", {"x": x})
    out = TorchGraph(model)(torch.from_numpy(x)).numpy()
    assert np.array_equal(out[1, 2], np.zeros(4, np.float32))
    assert_matches(model, feeds)


def test_lrn_with_an_even_size_follows_the_onnx_formula():
    """ONNX Runtime refuses even sizes; the spec sums channels [c - 1, c + 2] for size 4."""
    x = rand(2, 7, 3, 3)
    model, _ = one("LRN", {"x": x}, size=4, alpha=0.1, beta=0.75, bias=1.0)
    out = TorchGraph(model)(torch.from_numpy(x)).numpy()
    sq = np.pad(x.astype(np.float64) ** 2, [(0, 0), (1, 2), (0, 0), (0, 0)])
    total = sum(sq[:, i:i + 7] for i in range(4))
    expected = x / (1.0 + 0.1 / 4 * total) ** 0.75
    assert np.abs(out - expected).max() <= 1e-5


def test_topk_unsorted_returns_the_same_set_as_onnxruntime():
    x = rand(3, 8)
    model, feeds = one("TopK", {"x": x}, {"k": np.array([4])}, opset=11, n_out=2, sorted=0)
    values, indices = TorchGraph(model)(torch.from_numpy(x))
    ref_values, ref_indices = run_ort(model, feeds)
    order, ref_order = np.argsort(indices.numpy(), 1), np.argsort(ref_indices, 1)
    take = np.take_along_axis
    assert np.array_equal(take(indices.numpy(), order, 1), take(ref_indices, ref_order, 1))
    assert np.allclose(take(values.numpy(), order, 1), take(ref_values, ref_order, 1), atol=0)


def test_kernels_are_differentiable_where_ops_are():
    for case in ("LpPool-p3", "LRN", "GroupNormalization-18", "MaxRoiPool", "ReduceL2",
                 "TopK", "DepthToSpace"):
        model, _ = MORE_CASES[case]()
        shape = tuple(model.graph.input[0].type.tensor_type.shape.dim)
        feed = torch.from_numpy(rand(*[d.dim_value for d in shape])).requires_grad_()
        out = TorchGraph(model)(feed)
        out = out[0] if isinstance(out, tuple) else out
        out.square().sum().backward()
        assert feed.grad is not None and feed.grad.abs().sum() > 0, case


# ---- Random* ---------------------------------------------------------------------------------

def _gen(op, shape, **attrs):
    """A generator node plus an Add so the graph has an input (Random* alone would be folded)."""
    nodes = [node(op, [], ["r"], shape=list(shape), **attrs), node("Add", ["x", "r"])]
    return make(nodes, {"x": np.zeros(shape, np.float32)})


def _like(op, shape, **attrs):
    return make([node(op, ["x"], **attrs)], {"x": np.zeros(shape, np.float32)})


RANDOM_CASES = {  # name → (build, distribution, first, second, dtype)
    "RandomNormal": (lambda: _gen("RandomNormal", (50, 80), mean=1.5, scale=0.5),
                     "normal", 1.5, 0.5, np.float32),
    "RandomUniform": (lambda: _gen("RandomUniform", (50, 80), low=-1.0, high=3.0, seed=3.0),
                      "uniform", -1.0, 3.0, np.float32),
    "RandomNormalLike": (lambda: _like("RandomNormalLike", (40, 100), scale=2.0, seed=1.0),
                         "normal", 0.0, 2.0, np.float32),
    "RandomUniformLike": (lambda: _like("RandomUniformLike", (40, 100), low=2.0, high=2.5,
                                        dtype=TensorProto.DOUBLE), "uniform", 2.0, 2.5,
                          np.float64),
}


def _check_sample(values, distribution, first, second):
    if distribution == "uniform":
        assert values.min() >= first and values.max() <= second
        width = second - first
        assert abs(values.mean() - (first + second) / 2) < 0.05 * width
        assert abs(values.std() - width / np.sqrt(12)) < 0.05 * width
    else:
        assert abs(values.mean() - first) < 0.05 * second
        assert abs(values.std() - second) < 0.05 * second


@pytest.mark.parametrize("case", sorted(RANDOM_CASES))
def test_random_ops_draw_the_right_shape_dtype_and_distribution(case):
    build, distribution, first, second, dtype = RANDOM_CASES[case]
    model, feeds = build()
    ref = run_ort(model, feeds)[0]
    out = TorchGraph(model)(*[torch.from_numpy(v) for v in feeds.values()]).numpy()
    assert out.shape == ref.shape and out.dtype == ref.dtype == dtype
    for values in (out, ref):  # the same check holds for ORT's own draw
        _check_sample(values.astype(np.float64), distribution, first, second)


def test_random_like_draws_anew_per_call_and_seeds_reproduce():
    model, feeds = RANDOM_CASES["RandomNormalLike"][0]()
    x = torch.from_numpy(feeds["x"])
    graph = TorchGraph(model)
    first, second = graph(x), graph(x)
    assert not torch.equal(first, second)
    assert torch.equal(TorchGraph(model)(x), first)  # seeded: a new build repeats the sequence
    unseeded, _ = _like("RandomUniformLike", (40, 100))
    assert not torch.equal(TorchGraph(unseeded)(x), TorchGraph(unseeded)(x))


def test_random_without_input_is_one_draw_per_build():
    model, feeds = RANDOM_CASES["RandomUniform"][0]()
    x = torch.from_numpy(feeds["x"])
    graph = TorchGraph(model)
    assert torch.equal(graph(x), graph(x))  # folded to a constant when the graph is built
    assert torch.equal(TorchGraph(model)(x), graph(x))  # seed=3: the same draw every build
