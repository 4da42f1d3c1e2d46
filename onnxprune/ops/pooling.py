"""Pooling over space keeps channels; reductions and softmax over channels are barriers."""

from __future__ import annotations

import numpy as np

from onnxprune.ops import register


@register("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool",
          "GlobalLpPool", "MaxRoiPool", "SpaceToDepth", "DepthToSpace")
def pool(ctx, node):
    tracked = ctx.get(node.inputs[0])
    if tracked is None:
        return
    if node.op in ("SpaceToDepth", "DepthToSpace", "MaxRoiPool"):
        ctx.barrier(node, "moves data across the channel axis")
        return
    if tracked.axis != 1:
        ctx.barrier(node, f"channels tracked on axis {tracked.axis}, not 1")
        return
    if len(node.outputs) > 1 and node.outputs[1].outputs:
        ctx.barrier(node, "pooling indices depend on the channel count")
        return
    ctx.set(node.outputs[0], 1, tracked.ids)


def _reduce_axes(ctx, node, rank):
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1].name:
        value = ctx.const(node.inputs[1])
        if value is None:
            return None
        axes = value.tolist()
    if axes is None or len(axes) == 0:
        if int(node.attrs.get("noop_with_empty_axes", 0)):
            return []
        return list(range(rank))
    return sorted(int(a) + rank if int(a) < 0 else int(a) for a in np.ravel(axes))


@register("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
          "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")
def reduce(ctx, node):
    x = node.inputs[0]
    tracked = ctx.get(x)
    if tracked is None:
        return
    axes = _reduce_axes(ctx, node, len(ctx.shape(x)))
    if axes is None:
        ctx.barrier(node, "reduction axes are not constant")
        return
    if tracked.axis in axes:
        ctx.barrier(node, "reduces over the channel axis")
        return
    keepdims = int(node.attrs.get("keepdims", 1))
    axis = tracked.axis if keepdims else tracked.axis - sum(a < tracked.axis for a in axes)
    ctx.set(node.outputs[0], axis, tracked.ids)


@register("Softmax", "LogSoftmax", "Hardmax", "ArgMax", "ArgMin", "CumSum", "TopK")
def along_axis(ctx, node):
    x = node.inputs[0]
    tracked = ctx.get(x)
    if tracked is None:
        return
    rank = len(ctx.shape(x))
    default = 1 if node.op in ("Softmax", "LogSoftmax", "Hardmax") and ctx.opset < 13 else -1
    default = 0 if node.op in ("ArgMax", "ArgMin") else default
    axis = int(node.attrs.get("axis", default))
    axis = axis + rank if axis < 0 else axis
    coerced = node.op in ("Softmax", "LogSoftmax", "Hardmax") and ctx.opset < 13
    touches = tracked.axis >= axis if coerced else tracked.axis == axis
    if touches or node.op in ("ArgMax", "ArgMin", "CumSum", "TopK"):
        ctx.barrier(node, "operates along the channel axis" if touches else
                    "not followed by the channel analysis")
        return
    ctx.set(node.outputs[0], tracked.axis, tracked.ids)
