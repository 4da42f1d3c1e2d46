"""Conv and ConvTranspose: sources of channels; depthwise convs couple input and output; grouped
convs prune the same channels in every group."""

from __future__ import annotations

import numpy as np

from onnxprune.ops import register


def _weight_ok(ctx, node) -> bool:
    if ctx.const(node.inputs[1]) is None:
        ctx.barrier(node, "weights are not constant", listed=True)
        return False
    if len(node.inputs) > 2 and node.inputs[2].name and ctx.const(node.inputs[2]) is None:
        ctx.barrier(node, "bias is not constant", listed=True)
        return False
    return True


def _has_bias(node) -> bool:
    return len(node.inputs) > 2 and bool(node.inputs[2].name)


@register("Conv")
def conv(ctx, node):
    x, y = node.inputs[0], node.outputs[0]
    if not _weight_ok(ctx, node):
        return
    tracked = ctx.get(x)
    if tracked is not None and tracked.axis != 1:
        ctx.barrier(node, f"input channels tracked on axis {tracked.axis}, not 1")
        return
    group = int(node.attrs.get("group", 1))
    cin, cout = ctx.shape(x)[1], ctx.shape(y)[1]
    if group == 1:
        if tracked is not None:
            ctx.read(node, 0, tracked)
            ctx.slice_const(node, 1, 1, tracked.ids)
        ids = ctx.source(node, y, 1)
    elif cin == group:
        if tracked is None:
            return  # depthwise over fixed channels: nothing to prune
        ids = _depthwise(ctx, node, tracked, cout // group)
    else:
        ids = _grouped(ctx, node, tracked, group, cin // group, cout // group)
    ctx.slice_const(node, 1, 0, ids)
    if _has_bias(node):
        ctx.slice_const(node, 2, 0, ids)


def _depthwise(ctx, node, tracked, multiplier: int):
    """One input channel per group (``multiplier`` outputs each): pruning an input channel
    drops its whole group; the group count follows."""
    ids = np.repeat(tracked.ids, multiplier)
    ctx.set(node.outputs[0], 1, ids)

    def set_group(node, kept):
        node.attrs["group"] = int(node.inputs[1].shape[0]) // multiplier

    ctx.fixup(node, set_group)
    return ids


def _grouped(ctx, node, tracked, group: int, per_in: int, per_out: int):
    """1 < cin/group: every group keeps the same channels, so the group count stays. Input
    position ``i`` of every group is one channel (coupled across the groups), and so is output
    position ``j``: ``per_out`` new channels, each in all ``group`` groups."""
    if tracked is not None:
        blocks = tracked.ids.reshape(group, per_in)
        for other in blocks[1:]:
            ctx.space.union(blocks[0], other)
        ctx.read(node, 0, tracked)
        ctx.slice_const(node, 1, 1, blocks[0])
    y = node.outputs[0]
    atoms = ctx.space.new(per_out, y.name)
    ids = np.tile(atoms, group)
    ctx.set(y, 1, ids)
    return ids


@register("ConvTranspose")
def conv_transpose(ctx, node):
    x, y = node.inputs[0], node.outputs[0]
    if not _weight_ok(ctx, node):
        return
    tracked = ctx.get(x)
    if int(node.attrs.get("group", 1)) != 1:
        ctx.barrier(node, "grouped ConvTranspose is not pruned")
        return
    if tracked is not None and tracked.axis != 1:
        ctx.barrier(node, f"input channels tracked on axis {tracked.axis}, not 1")
        return
    if "output_shape" in node.attrs:
        ctx.barrier(node, "ConvTranspose with output_shape attribute is not pruned")
        return
    if tracked is not None:
        ctx.read(node, 0, tracked)
        ctx.slice_const(node, 1, 0, tracked.ids)
    ids = ctx.source(node, y, 1)
    ctx.slice_const(node, 1, 1, ids)
    if _has_bias(node):
        ctx.slice_const(node, 2, 0, ids)
