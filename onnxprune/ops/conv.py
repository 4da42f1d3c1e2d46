"""Conv and ConvTranspose: sources of channels; depthwise convs couple input and output."""

from __future__ import annotations

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
    elif group == cin == cout:
        if tracked is None:
            return  # depthwise over fixed channels: nothing to prune
        ids = tracked.ids
        ctx.set(y, 1, ids)
        ctx.fixup(node, _set_group)
    else:
        ctx.barrier(node, f"grouped conv (group={group}, {cin}->{cout} channels) is not pruned: "
                          f"removing whole groups is not supported")
        return
    ctx.slice_const(node, 1, 0, ids)
    if _has_bias(node):
        ctx.slice_const(node, 2, 0, ids)


def _set_group(node, kept):
    node.attrs["group"] = int(node.inputs[1].shape[0])


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
