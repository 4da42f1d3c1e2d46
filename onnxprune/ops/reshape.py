"""Flatten, Reshape, Transpose, Squeeze/Unsqueeze, Expand, Tile: moving the channel axis.

A Reshape is read from its inferred input and output shapes: dims are matched by products;
the channel axis passes through, is merged with neighbours (a flatten index map), or is split
(as in a channel shuffle: positions that share the kept sub-index are coupled).
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.analysis.indexmap import FlattenMap
from onnxprune.ops import register


def dim_groups(a: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[list[int], list[int]]]:
    """Pair runs of dims of ``a`` and ``b`` with equal products (C order)."""
    groups, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        pa, pb, ia, jb = a[i], b[j], [i], [j]
        i, j = i + 1, j + 1
        while pa != pb:
            if pa < pb and i < len(a):
                pa, i = pa * a[i], i + 1
                ia.append(i - 1)
            elif pb < pa and j < len(b):
                pb, j = pb * b[j], j + 1
                jb.append(j - 1)
            else:
                return []
        groups.append((ia, jb))
    if groups:
        groups[-1][0].extend(range(i, len(a)))
        groups[-1][1].extend(range(j, len(b)))
    return groups


@register("Reshape")
def reshape(ctx, node):
    x, out = node.inputs[0], node.outputs[0]
    tracked = ctx.get(x)
    if tracked is None:
        return
    a, b = ctx.shape(x), ctx.shape(out)
    pair = next(((ia, jb) for ia, jb in dim_groups(a, b) if tracked.axis in ia), None)
    if pair is None or a[0] != b[0] or 0 in pair[0]:
        ctx.barrier(node, "reshape mixes the channel axis with the batch axis")
        return
    ia, jb = pair
    in_big = [d for d in ia if a[d] > 1 or d == tracked.axis]
    out_big = [d for d in jb if b[d] > 1]
    t = tracked.axis
    if len(out_big) == 1:
        u = out_big[0]
        outer = math.prod(a[d] for d in ia if d < t)
        inner = math.prod(a[d] for d in ia if d > t)
        ids = FlattenMap(outer, a[t], inner).forward(tracked.ids)
        scale = outer * inner
    elif in_big == [t] and len(out_big) > 1:
        u = max(out_big, key=lambda d: (b[d], d))
        grid = tracked.ids.reshape([b[d] for d in jb])
        moved = np.moveaxis(grid, jb.index(u), 0).reshape(b[u], -1)
        for column in range(1, moved.shape[1]):
            ctx.space.union(moved[:, 0], moved[:, column])
        ids, scale = moved[:, 0], 1
    else:
        ctx.barrier(node, "reshape regroups the channel axis in a way that is not followed")
        return
    ctx.set(out, u, ids)
    counted = tracked.ids if scale != 1 or len(out_big) == 1 else ids

    def fix(node, kept, u=u, scale=scale, counted=counted):
        _set_shape_entry(ctx, node, u, int(kept(counted).sum()) * scale)

    ctx.fixup(node, fix)


def _set_shape_entry(ctx, node, entry: int, size: int) -> None:
    """Entry ``entry`` of the Reshape target becomes ``size``; every other entry stays as it was,
    so that dynamic (run-time computed) dims stay dynamic in the pruned graph."""
    target = ctx.const(node.inputs[1])
    if target is not None:
        values = np.array(target, dtype=np.int64).reshape(-1).copy()
        if values[entry] != -1:  # -1 follows the pruned size by itself
            values[entry] = size
        node.inputs[1] = gs.Constant(f"{node.name}__shape", values)
        return
    rank = len(ctx.shape(node.outputs[0]))
    keep = np.ones(rank, dtype=np.int64)
    keep[entry] = 0
    put = np.zeros(rank, dtype=np.int64)
    put[entry] = size
    masked = gs.Variable(f"{node.name}__shape_masked", dtype=np.int64, shape=[rank])
    fixed = gs.Variable(f"{node.name}__shape", dtype=np.int64, shape=[rank])
    ctx.graph.nodes.append(gs.Node("Mul", f"{node.name}__shape_mul", inputs=[
        node.inputs[1], gs.Constant(f"{node.name}__shape_keep", keep)], outputs=[masked]))
    ctx.graph.nodes.append(gs.Node("Add", f"{node.name}__shape_add", inputs=[
        masked, gs.Constant(f"{node.name}__shape_put", put)], outputs=[fixed]))
    node.inputs[1] = fixed


@register("Flatten")
def flatten(ctx, node):
    x = node.inputs[0]
    tracked = ctx.get(x)
    if tracked is None:
        return
    a = ctx.shape(x)
    axis = int(node.attrs.get("axis", 1))
    axis = axis + len(a) if axis < 0 else axis
    if tracked.axis < axis:
        ctx.barrier(node, "flattens the channel axis into the batch axis")
        return
    outer = math.prod(a[axis:tracked.axis])
    inner = math.prod(a[tracked.axis + 1:])
    ctx.set(node.outputs[0], 1, FlattenMap(outer, a[tracked.axis], inner).forward(tracked.ids))


@register("Transpose")
def transpose(ctx, node):
    tracked = ctx.get(node.inputs[0])
    if tracked is None:
        return
    rank = len(ctx.shape(node.inputs[0]))
    perm = list(node.attrs.get("perm", range(rank - 1, -1, -1)))
    ctx.set(node.outputs[0], perm.index(tracked.axis), tracked.ids)


def _axes(ctx, node):
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1].name:
        value = ctx.const(node.inputs[1])
        return None if value is None else [int(v) for v in np.ravel(value)]
    return None if axes is None else [int(v) for v in axes]


@register("Squeeze")
def squeeze(ctx, node):
    x = node.inputs[0]
    tracked = ctx.get(x)
    if tracked is None:
        return
    a = ctx.shape(x)
    axes = _axes(ctx, node)
    axes = [d for d in range(len(a)) if a[d] == 1] if axes is None else \
        [d + len(a) if d < 0 else d for d in axes]
    if tracked.axis in axes:
        ctx.barrier(node, "squeezes the channel axis")
        return
    ctx.set(node.outputs[0], tracked.axis - sum(d < tracked.axis for d in axes), tracked.ids)


@register("Unsqueeze")
def unsqueeze(ctx, node):
    x = node.inputs[0]
    tracked = ctx.get(x)
    if tracked is None:
        return
    rank = len(ctx.shape(node.outputs[0]))
    axes = _axes(ctx, node)
    if axes is None:
        ctx.barrier(node, "axes are not constant")
        return
    inserted = {d + rank if d < 0 else d for d in axes}
    kept_positions = [d for d in range(rank) if d not in inserted]
    ctx.set(node.outputs[0], kept_positions[tracked.axis], tracked.ids)


@register("Expand", "Tile")
def expand(ctx, node):
    x, out = node.inputs[0], node.outputs[0]
    tracked = ctx.get(x)
    if tracked is None:
        return
    axis = tracked.axis + len(ctx.shape(out)) - len(ctx.shape(x))
    if ctx.shape(out)[axis] != len(tracked.ids):
        ctx.barrier(node, "repeats along the channel axis")
        return
    if node.op == "Expand" and ctx.const(node.inputs[1]) is None:
        ctx.barrier(node, "target shape is computed at run time")
        return
    ctx.set(out, axis, tracked.ids)
    if node.op == "Expand":
        target = ctx.const(node.inputs[1])
        entry = axis - (len(ctx.shape(out)) - len(target))
        if entry >= 0 and int(target[entry]) > 1:
            ctx.fix_const_entry(node, 1, entry, tracked.ids, "shape")
