"""Normalizations: per-channel ones slice their parameters; those over channels are barriers."""

from __future__ import annotations

from onnxprune.ops import register


@register("BatchNormalization", "InstanceNormalization")
def per_channel_norm(ctx, node):
    x = node.inputs[0]
    tracked = ctx.get(x)
    if tracked is None:
        return
    if tracked.axis != 1:
        ctx.barrier(node, f"channels tracked on axis {tracked.axis}, not 1")
        return
    params = [i for i, t in enumerate(node.inputs[1:], start=1) if t.name]
    if any(ctx.const(node.inputs[i]) is None for i in params):
        ctx.barrier(node, "parameters are not constant")
        return
    if node.op == "BatchNormalization" and len([o for o in node.outputs if o.outputs]) > 1:
        ctx.barrier(node, "training-mode outputs are not supported")
        return
    for i in params:
        ctx.slice_const(node, i, 0, tracked.ids)
    ctx.set(node.outputs[0], 1, tracked.ids)


@register("LayerNormalization")
def layer_norm(ctx, node):
    x = node.inputs[0]
    tracked = ctx.get(x)
    if tracked is None:
        return
    rank = len(ctx.shape(x))
    axis = int(node.attrs.get("axis", -1))
    axis = axis + rank if axis < 0 else axis
    if tracked.axis >= axis:
        ctx.barrier(node, "normalizes over the channel axis")
        return
    ctx.set(node.outputs[0], tracked.axis, tracked.ids)


@register("LpNormalization", "GroupNormalization", "LRN", "MeanVarianceNormalization")
def mixing_norm(ctx, node):
    ctx.barrier(node, "normalizes across channels")
