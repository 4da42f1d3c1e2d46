"""Concat, Split and Slice along the channel axis (offset index maps) or across it."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.analysis.indexmap import ConcatMap, SplitMap
from onnxprune.ops import register


def _norm(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


@register("Concat")
def concat(ctx, node):
    out = node.outputs[0]
    rank = len(ctx.shape(out))
    axis = _norm(int(node.attrs["axis"]), rank)
    inputs = [t for t in node.inputs if t.name]
    tracked = [ctx.get(t) for t in inputs]
    present = [t for t in tracked if t is not None]
    if not present:
        return
    if all(t is not None and t.axis != axis for t in tracked) and \
            len({t.axis for t in present}) == 1:
        for other in present[1:]:
            ctx.space.union(present[0].ids, other.ids)
        ctx.set(out, present[0].axis, present[0].ids)
        return
    if any(t.axis != axis for t in present):
        ctx.barrier(node, "inputs carry channels on different axes")
        return
    parts = [t.ids if t is not None else
             ctx.fixed(ctx.shape(x)[axis], f"concatenated with fixed tensor '{x.name}'")
             for x, t in zip(inputs, tracked)]
    ctx.set(out, axis, ConcatMap(tuple(len(p) for p in parts)).forward(parts))


@register("Split")
def split(ctx, node):
    x = node.inputs[0]
    tracked = ctx.get(x)
    if tracked is None:
        return
    rank = len(ctx.shape(x))
    axis = _norm(int(node.attrs.get("axis", 0)), rank)
    if tracked.axis != axis:
        for out in node.outputs:
            ctx.set(out, tracked.axis, tracked.ids)
        return
    sizes = tuple(ctx.shape(o)[axis] for o in node.outputs)
    parts = SplitMap(sizes).forward(tracked.ids)
    for out, part in zip(node.outputs, parts):
        ctx.set(out, axis, part)

    def fix(node, kept):
        new_sizes = SplitMap.kept_sizes(parts, kept)
        node.attrs.pop("num_outputs", None)
        if ctx.opset >= 13:
            node.attrs.pop("split", None)
            const = gs.Constant(f"{node.name}__split", np.array(new_sizes, dtype=np.int64))
            if len(node.inputs) > 1:
                node.inputs[1] = const
            else:
                node.inputs.append(const)
        else:
            node.attrs["split"] = new_sizes

    ctx.fixup(node, fix)


@register("Slice")
def slice_(ctx, node):
    x = node.inputs[0]
    tracked = ctx.get(x)
    if tracked is None:
        return
    rank = len(ctx.shape(x))
    values = [ctx.value(t) if t.name else None for t in node.inputs[1:]]
    starts, ends = values[0] if values else None, values[1] if len(values) > 1 else None
    axes = values[2] if len(values) > 2 and values[2] is not None else None
    steps = values[3] if len(values) > 3 and values[3] is not None else None
    if starts is None or ends is None or (len(node.inputs) > 3 and node.inputs[3].name
                                          and axes is None):
        ctx.barrier(node, "slice bounds are not constant")
        return
    axes = [_norm(int(a), rank) for a in (axes if axes is not None else range(len(starts)))]
    if tracked.axis not in axes:
        ctx.set(node.outputs[0], tracked.axis, tracked.ids)
        return
    computed = any(t.name and ctx.const(t) is None for t in node.inputs[1:3])
    if computed and len(axes) > 1:  # folded at batch 1: only a channel-only slice may be fixed
        ctx.barrier(node, "slice bounds over several axes are computed at run time")
        return
    k = axes.index(tracked.axis)
    step = int(steps[k]) if steps is not None else 1
    if step != 1:
        ctx.barrier(node, "strided slice along the channel axis")
        return
    size = len(tracked.ids)
    lo, hi, _ = slice(int(starts[k]), int(ends[k])).indices(size)
    ctx.set(node.outputs[0], tracked.axis, tracked.ids[lo:hi])
    ctx.fix_const_entry(node, 1, k, tracked.ids[:lo], "starts")
    ctx.fix_const_entry(node, 2, k, tracked.ids[:hi], "ends")
