"""Ops that read only a tensor's shape or select along other axes."""

from __future__ import annotations

from onnxprune.ops import register


@register("Shape", "Size")
def shape_of(ctx, node):
    """A shape is read at run time, so pruning changes it consistently: not a barrier."""


@register("Constant", "ConstantOfShape", "Range", "RandomNormal", "RandomUniform",
          "RandomNormalLike", "RandomUniformLike", "EyeLike")
def no_channels(ctx, node):
    """Makes new values; whatever it reads is not its channels."""


@register("Gather")
def gather(ctx, node):
    x = node.inputs[0]
    tracked = ctx.get(x)
    if ctx.get(node.inputs[1]) is not None:
        ctx.barrier(node, "indices come from a pruned tensor", [node.inputs[1]])
    if tracked is None:
        return
    rank = len(ctx.shape(x))
    axis = int(node.attrs.get("axis", 0))
    axis = axis + rank if axis < 0 else axis
    if axis == tracked.axis:
        ctx.barrier(node, "gathers along the channel axis")
        return
    index_rank = len(ctx.shape(node.inputs[1]))
    new_axis = tracked.axis if tracked.axis < axis else tracked.axis + index_rank - 1
    ctx.set(node.outputs[0], new_axis, tracked.ids)
