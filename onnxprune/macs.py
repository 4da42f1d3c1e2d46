"""The one MAC formula: multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul at batch 1.

Their quantized forms (ConvInteger, QLinearConv, MatMulInteger, QLinearMatMul) count the same
multiply-accumulates, read from the inputs that hold their data and weight.

Each counted node gives a ``MacExpr``: ``coeff * size(reduce) * size(out)``, where ``reduce`` is
the (tensor, axis) of the input channels the node sums over and ``out`` the (tensor, axis) of its
output channels. ``analyze`` evaluates it with the real sizes, gate training with soft sizes
(sum of gate values) and selection with kept counts: one formula for the same number.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import onnx

from onnxprune.errors import OnnxPruneError

Axis = tuple[str, int]  # (tensor name, axis)
MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "ConvInteger", "QLinearConv",
           "MatMulInteger", "QLinearMatMul")
# (data input, weight input) of each MAC op whose operands are not inputs 0 and 1
OPERANDS = {"QLinearConv": (0, 3), "QLinearMatMul": (0, 3)}


@dataclass(frozen=True)
class MacExpr:
    """MACs of one node as ``coeff * size(reduce) * size(out)`` (absent factors are 1)."""

    node: str
    op: str
    coeff: float  # an integer, but for grouped convs (divided by the group count)
    reduce: Axis | None
    out: Axis | None

    def evaluate(self, size: Callable[[Axis], float]) -> float:
        value = float(self.coeff)
        if self.reduce is not None:
            value *= size(self.reduce)
        if self.out is not None:
            value *= size(self.out)
        return value


def attr(node: onnx.NodeProto, name: str, default=None):
    """An attribute's python value, or ``default``."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def mac_expr(node: onnx.NodeProto, shapes: Mapping[str, tuple[int, ...]]) -> MacExpr | None:
    """The MAC expression of ``node``, or None when the op does no multiply-accumulates."""
    rule = _RULES.get(node.op_type)
    if rule is None or node.domain not in ("", "ai.onnx"):
        return None
    x, w = (node.input[i] if len(node.input) > i else "" for i in OPERANDS.get(
        node.op_type, (0, 1)))
    needed = [n for n in (x, w, node.output[0]) if n]
    missing = [n for n in needed if n not in shapes]
    if missing:
        raise OnnxPruneError(
            f"cannot count MACs of {node.op_type} node '{node.name}': shape of '{missing[0]}' unknown"
        )
    return rule(node, shapes, x, w)


def _conv(node: onnx.NodeProto, shapes, x: str, w: str) -> MacExpr:
    y = node.output[0]
    cin = shapes[x][1]
    kernel = math.prod(shapes[w][2:])
    spatial = math.prod(shapes[y][2:])
    group = int(attr(node, "group", 1))
    if group == 1:
        return MacExpr(node.name, node.op_type, spatial * kernel, (x, 1), (y, 1))
    if cin // group == 1:  # depthwise (with a channel multiplier): one input per group
        return MacExpr(node.name, node.op_type, spatial * kernel, None, (y, 1))
    # grouped: each output channel reads cin/group inputs; pruning keeps the group count, so
    # MACs = spatial * kernel * cin * cout / group with both channel counts pruned
    return MacExpr(node.name, node.op_type, spatial * kernel / group, (x, 1), (y, 1))


def _conv_transpose(node: onnx.NodeProto, shapes, x: str, w: str) -> MacExpr:
    y = node.output[0]
    cout = shapes[y][1]
    kernel = math.prod(shapes[w][2:])
    spatial = math.prod(shapes[x][2:])
    group = int(attr(node, "group", 1))
    if group == 1:
        return MacExpr(node.name, node.op_type, spatial * kernel, (x, 1), (y, 1))
    return MacExpr(node.name, node.op_type, spatial * kernel * (cout // group), (x, 1), None)


def _gemm(node: onnx.NodeProto, shapes, a: str, b: str) -> MacExpr:
    y = node.output[0]
    k_axis = 0 if int(attr(node, "transA", 0)) else 1
    rows = shapes[y][0]
    return MacExpr(node.name, node.op_type, rows, (a, k_axis), (y, 1))


def _matmul(node: onnx.NodeProto, shapes, a: str, b: str) -> MacExpr:
    y = node.output[0]
    a_shape, y_shape = shapes[a], shapes[y]
    if len(a_shape) == 1 or len(shapes[b]) == 1:
        # vector operands: MACs = prod(out) * K, no channel axis on one side
        k = a_shape[-1]
        return MacExpr(node.name, node.op_type, math.prod(y_shape) * k, None, None)
    rows = math.prod(y_shape[:-1])
    return MacExpr(node.name, node.op_type, rows, (a, len(a_shape) - 1), (y, len(y_shape) - 1))


_RULES: dict[str, Callable[[onnx.NodeProto, Mapping, str, str], MacExpr]] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "ConvInteger": _conv,
    "QLinearConv": _conv,
    "MatMulInteger": _matmul,
    "QLinearMatMul": _matmul,
}


def shape_size(shapes: Mapping[str, tuple[int, ...]]) -> Callable[[Axis], int]:
    """``size`` for ``MacExpr.evaluate`` from concrete shapes."""
    return lambda axis: shapes[axis[0]][axis[1]]


def model_mac_exprs(model: onnx.ModelProto, shapes) -> list[MacExpr]:
    """Every MAC expression of the main graph, in node order."""
    exprs = []
    for node in model.graph.node:
        expr = mac_expr(node, shapes)
        if expr is not None:
            exprs.append(expr)
    return exprs
