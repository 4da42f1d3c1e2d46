"""Ops that read only a tensor's shape or select along other axes."""

from __future__ import annotations

import numpy as np

from onnxprune.ops import register


# inputs that take a shape or index vector: a pruned channel count there follows pruning (the
# Reshape/Slice/Expand/Resize rules fix or refuse these inputs themselves)
SHAPE_INPUTS = {"Reshape": {1}, "Expand": {1}, "ConstantOfShape": {0}, "Tile": {1},
                "Slice": {1, 2, 3, 4}, "Resize": {2, 3}, "Split": {1}, "Shape": {0}, "Size": {0}}
# integer shape arithmetic that only carries such a value on
SHAPE_ARITHMETIC = {"Gather", "Concat", "Unsqueeze", "Squeeze", "Cast", "Identity", "Slice", "Add",
                    "Sub", "Mul", "Div", "Floor", "Ceil", "Min", "Max", "Neg", "Abs", "ReduceProd",
                    "ReduceSum", "ReduceMin", "ReduceMax", "Reshape", "Flatten"}


@register("Shape", "Size")
def shape_of(ctx, node):
    """A shape read at run time follows pruning; where its channel count reaches values (for
    instance ``Mul(y, Cast(Size(y)))``) pruning would change them: a barrier on the channels."""
    tracked = ctx.get(node.inputs[0])
    if tracked is None or not _reads_channel_axis(ctx, node, tracked.axis):
        return
    outputs = {t.name for t in ctx.graph.outputs}
    position = tracked.axis - _start(ctx, node)
    culprit = f"graph output '{node.outputs[0].name}'" if node.outputs[0].name in outputs \
        else next((found for user in node.outputs[0].outputs
                    if not _picks_other_dims(ctx, user, node.outputs[0], position)
                   for found in [_value_use(node.outputs[0], outputs, only=user)] if found),
                  None)
    if culprit is not None:
        ctx.barrier(node, f"the {node.op.lower()} including the channel count feeds {culprit} "
                          f"as a value, which pruning would change")


def _start(ctx, node) -> int:
    start = int(node.attrs.get("start", 0)) if node.op == "Shape" else 0
    return start + len(ctx.shape(node.inputs[0])) if start < 0 else start


def _reads_channel_axis(ctx, node, axis: int) -> bool:
    if node.op == "Size":
        return True
    rank = len(ctx.shape(node.inputs[0]))
    end = node.attrs.get("end")
    end = rank if end is None else (int(end) + rank if int(end) < 0 else int(end))
    return _start(ctx, node) <= axis < end


def _picks_other_dims(ctx, user, shape, position: int) -> bool:
    """A Gather of constant indices from a shape vector that leaves out the channel entry."""
    if user.op != "Gather" or user.inputs[0] is not shape or shape.name in \
            {t.name for t in user.inputs[1:]}:
        return False
    indices = ctx.const(user.inputs[1])
    if indices is None:
        return False
    length = len(ctx.shapes.get(shape.name, ())) or None
    picked = {int(i) + (length or 0) if int(i) < 0 else int(i) for i in np.ravel(indices)}
    return position not in picked and (length is not None or all(i >= 0 for i in picked))


def _value_use(tensor, outputs: set[str], depth: int = 0, only=None) -> str | None:
    """Where ``tensor`` (through shape arithmetic) is read as data, or None; ``only``: the
    one consumer to follow."""
    if tensor.name in outputs:
        return f"graph output '{tensor.name}'"
    for user in tensor.outputs if only is None else [only]:
        slots = {i for i, t in enumerate(user.inputs) if t is tensor}
        if slots <= SHAPE_INPUTS.get(user.op, set()):
            continue
        if user.op not in SHAPE_ARITHMETIC or user.domain not in ("", "ai.onnx", None) \
                or depth > 32:
            return f"{user.op} '{user.name}'"
        for out in user.outputs:
            found = _value_use(out, outputs, depth + 1)
            if found is not None:
                return found
    return None


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
