"""Resize/Upsample and Pad: channels pass through when nothing changes along their axis."""

from __future__ import annotations


from onnxprune.ops import register


@register("Resize", "Upsample")
def resize(ctx, node):
    x, out = node.inputs[0], node.outputs[0]
    tracked = ctx.get(x)
    if tracked is None:
        return
    if ctx.shape(out)[tracked.axis] != len(tracked.ids):
        ctx.barrier(node, "resizes the channel axis")
        return
    ctx.set(out, tracked.axis, tracked.ids)
    sizes_slot = 3 if node.op == "Resize" else None
    if sizes_slot is None or len(node.inputs) <= sizes_slot or not node.inputs[sizes_slot].name:
        return
    if ctx.const(node.inputs[sizes_slot]) is None:
        ctx.barrier(node, "output sizes are computed at run time")
        return

    ctx.fix_const_entry(node, sizes_slot, tracked.axis, tracked.ids, "sizes")


@register("Pad")
def pad(ctx, node):
    x, out = node.inputs[0], node.outputs[0]
    tracked = ctx.get(x)
    if tracked is None:
        return
    if ctx.shape(out)[tracked.axis] != len(tracked.ids):
        ctx.barrier(node, "pads the channel axis")
        return
    if len(node.inputs) > 1 and node.inputs[1].name and ctx.const(node.inputs[1]) is None:
        ctx.barrier(node, "pads are computed at run time")
        return
    ctx.set(out, tracked.axis, tracked.ids)
