"""Resize/Upsample and Pad: channels pass through when nothing changes along their axis."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

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

    def fix(node, kept, axis=tracked.axis, ids=tracked.ids):
        sizes = np.array(ctx.const(node.inputs[sizes_slot]), dtype=np.int64).copy()
        sizes[axis] = int(kept(ids).sum())
        node.inputs[sizes_slot] = gs.Constant(f"{node.name}__sizes", sizes)

    ctx.fixup(node, fix)


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
