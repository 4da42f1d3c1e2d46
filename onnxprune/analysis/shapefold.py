"""The one evaluator of shape arithmetic (Shape -> Gather -> Unsqueeze -> Concat -> Slice ...).

A small integer tensor is a ``SymVal``: its entries and whether it is a scalar; an entry is a
known size, a symbol (a dynamic dim such as the batch) or None (unknown). The analysis folds
with every dim known (batch 1, ``--input-shape``): entries come out as integers. The torch
executor folds with the batch symbolic: where entries stay symbols, a Reshape target still
becomes constant through ``reshape_target`` (0 copies a dim, -1 infers one). No torch here.

``symbolic_value(spec, inputs, dims)`` takes a node spec with ``inputs`` (names), ``opset``,
``attr(name, default)``, ``has(index)``, ``const(index)`` (numpy or None) and
``values(attr, index)`` (``gates.torch_ops.NodeSpec`` or ``FoldSpec``), the ``SymVal`` of each
input (None if unknown) and ``dims`` (tensor name -> its dims). It returns the output's
``SymVal`` or None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx

Dim = int | str | None  # a known size, a symbol (e.g. the batch) or unknown
SymVal = tuple[tuple[Dim, ...], bool]  # (entries, is a scalar) of a small integer tensor
SMALL = 64  # elements: shape arithmetic is small; real data is never folded


class FoldSpec:
    """A node as ``symbolic_value`` reads it, with numpy constants (the analysis side)."""

    def __init__(self, node: onnx.NodeProto, opset: int, consts: Mapping[int, np.ndarray]):
        self.inputs = list(node.input)
        self.opset = opset
        self.consts = dict(consts)
        self.attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute
                      if a.type != onnx.AttributeProto.TENSOR}

    def attr(self, key: str, default=None):
        return self.attrs.get(key, default)

    def has(self, index: int) -> bool:
        return index < len(self.inputs) and bool(self.inputs[index])

    def const(self, index: int) -> np.ndarray | None:
        return self.consts.get(index)

    def values(self, attr: str | None, index: int | None, default=None):
        if attr is not None and attr in self.attrs:
            return self.attrs[attr]
        if index is not None and self.has(index):
            value = self.const(index)
            return None if value is None else value.tolist()
        return default


def sym_of_array(value: np.ndarray | None) -> SymVal | None:
    """A small integer array as a ``SymVal`` (None for anything else)."""
    if value is None or value.ndim > 1 or value.size > SMALL or value.dtype.kind not in "iu":
        return None
    return tuple(int(v) for v in value.reshape(-1).tolist()), value.ndim == 0


def array_of_sym(value: SymVal) -> np.ndarray | None:
    """The int64 array of a ``SymVal`` whose entries are all known, else None."""
    entries, scalar = value
    if not all(isinstance(e, int) for e in entries):
        return None
    array = np.array(entries, dtype=np.int64)
    return array.reshape(()) if scalar else array


def _axes(spec) -> list | None:
    axes = spec.values("axes", 1)
    return None if axes is not None and not isinstance(axes, list) else axes


def _shape(spec, ins, dims) -> SymVal | None:
    shape = dims.get(spec.inputs[0])
    if shape is None:
        return None
    return tuple(shape[spec.attr("start", 0): spec.attr("end", None)]), False


def _gather(spec, ins, dims) -> SymVal | None:
    data, index = ins[0], spec.const(1)
    if data is None or data[1] or index is None or spec.attr("axis", 0) != 0:
        return None
    entries = data[0]
    if not all(-len(entries) <= int(i) < len(entries) for i in index.reshape(-1)):
        return None
    picked = tuple(entries[int(i)] for i in index.reshape(-1))
    return picked, index.ndim == 0


def _unsqueeze(spec, ins, dims) -> SymVal | None:
    data = ins[0]
    if data is None or not data[1] or _axes(spec) not in ([0], [-1]):
        return None
    return data[0], False


def _squeeze(spec, ins, dims) -> SymVal | None:
    data = ins[0]
    if data is None or data[1] or len(data[0]) != 1 or _axes(spec) not in (None, [0], [-1]):
        return None
    return data[0], True


def _concat(spec, ins, dims) -> SymVal | None:
    present = [v for i, v in enumerate(ins) if spec.has(i)]
    if any(v is None or v[1] for v in present):
        return None
    return tuple(e for v in present for e in v[0]), False


def _slice(spec, ins, dims) -> SymVal | None:
    data = ins[0]
    if data is None or data[1] or spec.opset < 10:
        return None
    params = [spec.const(i) if spec.has(i) else None for i in (1, 2, 3, 4)]
    if params[0] is None or params[1] is None or any(
        p is None for i, p in zip((3, 4), params[2:]) if spec.has(i)
    ):
        return None
    if params[2] is not None and [int(a) for a in params[2].reshape(-1)] not in ([0], [-1]):
        return None
    step = int(params[3].reshape(-1)[0]) if params[3] is not None else 1
    start, end = int(params[0].reshape(-1)[0]), int(params[1].reshape(-1)[0])
    return data[0][slice(start, end, step)], False


def _same(spec, ins, dims) -> SymVal | None:
    return ins[0]


def _cast(spec, ins, dims) -> SymVal | None:
    integer = spec.attr("to") in (onnx.TensorProto.INT64, onnx.TensorProto.INT32)
    return ins[0] if integer else None


SYMBOLIC = {
    "Shape": _shape, "Gather": _gather, "Unsqueeze": _unsqueeze, "Squeeze": _squeeze,
    "Concat": _concat, "Slice": _slice, "Identity": _same, "Cast": _cast,
}


def symbolic_value(op_type: str, spec, ins: Sequence[SymVal | None],
                   dims: Mapping[str, Sequence[Dim]]) -> SymVal | None:
    """The output ``SymVal`` of a shape-arithmetic node, or None (see the module doc)."""
    rule = SYMBOLIC.get(op_type)
    return None if rule is None else rule(spec, ins, dims)


def reshape_target(value: SymVal, data_dims: Sequence[Dim]) -> list[int] | None:
    """A Reshape target with symbolic entries as a constant one: a symbol equal to the input's
    dim at the same axis is 0 (copy), one remaining unknown entry is -1; None if impossible."""
    if value[1]:
        return None
    target, unknown = [], 0
    for axis, entry in enumerate(value[0]):
        if isinstance(entry, int):
            target.append(entry)
        elif entry is not None and axis < len(data_dims) and data_dims[axis] == entry:
            target.append(0)
        else:
            target.append(-1)
            unknown += 1
    if unknown > 1 or (unknown == 1 and value[0].count(-1)):
        return None
    return target
