"""Gemm and MatMul with a constant weight: sources of channels, readers of their input's."""

from __future__ import annotations

from onnxprune.ops import register


@register("Gemm")
def gemm(ctx, node):
    a, b, y = node.inputs[0], node.inputs[1], node.outputs[0]
    c = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    if ctx.const(b) is None or (c is not None and ctx.const(c) is None):
        ctx.barrier(node, "weights are not constant", listed=True)
        return
    if int(node.attrs.get("transA", 0)):
        ctx.barrier(node, "transA=1 is not supported")
        return
    tracked = ctx.get(a)
    if tracked is not None and tracked.axis != 1:
        ctx.barrier(node, f"input features tracked on axis {tracked.axis}, not 1")
        return
    trans_b = int(node.attrs.get("transB", 0))
    if tracked is not None:
        ctx.read(node, 0, tracked)
        ctx.slice_const(node, 1, 1 if trans_b else 0, tracked.ids)
    ids = ctx.source(node, y, 1)
    ctx.slice_const(node, 1, 0 if trans_b else 1, ids)
    if c is not None:
        c_shape = ctx.shape(c)
        if c_shape and c_shape[-1] == len(ids) and len(ids) > 1:
            ctx.slice_const(node, 2, len(c_shape) - 1, ids)


@register("MatMul")
def matmul(ctx, node):
    a, b, y = node.inputs[0], node.inputs[1], node.outputs[0]
    tracked = ctx.get(a)
    a_rank = len(ctx.shape(a))
    if ctx.const(b) is None or len(ctx.shape(b)) != 2 or a_rank < 2:
        if tracked is not None and tracked.axis < a_rank - 1 and ctx.get(b) is None \
                and ctx.const(b) is not None:
            ctx.set(y, tracked.axis, tracked.ids)
            return
        ctx.barrier(node, "only MatMul by a constant 2-D weight is followed")
        return
    if tracked is not None and tracked.axis != a_rank - 1:
        ctx.set(y, tracked.axis, tracked.ids)  # rows pass through
        return
    if tracked is not None:
        ctx.read(node, 0, tracked)
        ctx.slice_const(node, 1, 0, tracked.ids)
    ids = ctx.source(node, y, len(ctx.shape(y)) - 1)
    ctx.slice_const(node, 1, 1, ids)
