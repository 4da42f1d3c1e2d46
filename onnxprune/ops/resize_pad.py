"""Resize/Upsample and Pad: channels pass through when nothing changes along their axis."""

from __future__ import annotations


from onnxprune.ops import register


def _spatial_only(ctx, node, verb: str):
    """The input's tracked channels when the op leaves the channel axis' size alone; else None
    (a barrier when it changes that size)."""
    tracked = ctx.get(node.inputs[0])
    if tracked is not None and ctx.shape(node.outputs[0])[tracked.axis] != len(tracked.ids):
        ctx.barrier(node, f"{verb} the channel axis")
        return None
    return tracked


@register("Resize", "Upsample")
def resize(ctx, node):
    tracked = _spatial_only(ctx, node, "resizes")
    if tracked is None:
        return
    ctx.set(node.outputs[0], tracked.axis, tracked.ids)
    sizes_slot = 3 if node.op == "Resize" else None
    if sizes_slot is None or len(node.inputs) <= sizes_slot or not node.inputs[sizes_slot].name:
        return
    if ctx.const(node.inputs[sizes_slot]) is None:
        ctx.barrier(node, "output sizes are computed at run time")
        return

    ctx.fix_const_entry(node, sizes_slot, tracked.axis, tracked.ids, "sizes")


@register("Pad")
def pad(ctx, node):
    tracked = _spatial_only(ctx, node, "pads")
    if tracked is None:
        return
    if len(node.inputs) > 1 and node.inputs[1].name and ctx.const(node.inputs[1]) is None:
        ctx.barrier(node, "pads are computed at run time")
        return
    ctx.set(node.outputs[0], tracked.axis, tracked.ids)
