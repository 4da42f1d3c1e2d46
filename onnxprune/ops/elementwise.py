"""Element-wise ops: unary ones pass channels through, broadcasting ones couple them."""

from __future__ import annotations

import numpy as np

from onnxprune.ops import register

UNARY = (
    "Relu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "LeakyRelu", "Elu", "Selu", "Celu",
    "Softplus", "Softsign", "Gelu", "Erf", "Identity", "Dropout", "Cast", "CastLike", "Neg", "Exp",
    "Log", "Abs", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Mish",
    "ThresholdedRelu", "Not", "IsNaN", "IsInf", "Clip", "Shrink",
)
BROADCAST = ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Where",
             "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor",
             "Mod", "BitShift")


@register(*UNARY)
def unary(ctx, node):
    """Input 0 carries the channels; any other input (Clip bounds, Dropout ratio) is a scalar."""
    tracked = ctx.get(node.inputs[0]) if node.inputs else None
    if tracked is None:
        return
    for extra in node.inputs[1:]:
        if extra.name and (ctx.get(extra) is not None or int(np.prod(ctx.shape(extra))) > 1):
            ctx.barrier(node, f"non-scalar extra input '{extra.name}'")
            return
    for out in node.outputs[:1]:
        ctx.set(out, tracked.axis, tracked.ids)
    if node.op == "Dropout" and len(node.outputs) > 1 and node.outputs[1].outputs:
        ctx.set(node.outputs[1], tracked.axis, tracked.ids)


@register(*BROADCAST)
def broadcast(ctx, node):
    """Align every input to the output rank; tracked inputs on the same axis are coupled."""
    out = node.outputs[0]
    rank = len(ctx.shape(out))
    out_dim = None
    ids = None
    for tensor in node.inputs:
        tracked = ctx.get(tensor)
        if tracked is None:
            continue
        axis = tracked.axis + rank - len(ctx.shape(tensor))
        if out_dim is None:
            out_dim, ids = axis, tracked.ids
        elif axis != out_dim:
            ctx.barrier(node, f"inputs carry channels on different axes ({out_dim} and {axis})")
            return
        elif len(tracked.ids) != len(ids):
            ctx.barrier(node, "inputs broadcast along the channel axis")
            return
        else:
            ctx.space.union(ids, tracked.ids)
    if out_dim is None:
        return
    for index, tensor in enumerate(node.inputs):
        if not tensor.name or ctx.get(tensor) is not None:
            continue
        shape = ctx.shape(tensor)
        axis = out_dim - (rank - len(shape))
        if axis < 0 or shape[axis] == 1:
            continue  # broadcasts along the channels
        if ctx.const(tensor) is None:
            ctx.barrier(node, f"'{tensor.name}' is a computed tensor over the channel axis")
            return
        ctx.slice_const(node, index, axis, ids)
    ctx.set(out, out_dim, ids)
