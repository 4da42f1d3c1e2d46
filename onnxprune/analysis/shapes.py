"""Shape inference with the batch fixed to 1: every tensor's concrete shape, or an error."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from onnxprune.errors import OnnxPruneError
from onnxprune.inputshapes import resolve_names
from onnxprune.macs import OPERANDS, MAC_OPS

Shape = tuple[int, ...]


def graph_input_names(model: onnx.ModelProto) -> list[str]:
    """The graph inputs that are real inputs (not initializers listed as inputs)."""
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def fixed_batch_copy(model: onnx.ModelProto, batch: int = 1,
                     input_shapes: Mapping[str, Sequence[int]] | None = None) -> onnx.ModelProto:
    """A copy of ``model`` whose symbolic input dims are fixed: the leading one to ``batch``.

    ``input_shapes`` ({input name: dims}, as from ``--input-shape``) gives the sizes of the
    other dynamic dims; a declared static dim it contradicts is refused, and so is a dynamic
    dim it does not give. Only the copy changes: the model keeps its declared dynamic dims.
    """
    copy = _light_copy(model)
    real_inputs = graph_input_names(model)
    given = resolve_names(input_shapes, real_inputs)
    for value in copy.graph.input:
        if value.name not in real_inputs or not value.type.HasField("tensor_type"):
            continue
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape"):
            if value.name not in given:
                raise OnnxPruneError(f"input '{value.name}' has no shape; export with a static "
                                     f"shape or pass --input-shape {value.name}:D0,D1,...")
            tensor_type.shape.SetInParent()
            for _ in given[value.name]:
                tensor_type.shape.dim.add()
        _fix_dims(value.name, tensor_type.shape.dim, batch, given.get(value.name))
    for value in copy.graph.output:
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            # declared output shapes are left to inference (a stale declaration is not fatal)
            value.type.tensor_type.ClearField("shape")
    return copy


def _fix_dims(name: str, dims, batch: int, shape: tuple[int, ...] | None) -> None:
    """Make every dim of input ``name`` concrete (in place, on the inference copy)."""
    if shape is not None and len(shape) != len(dims):
        raise OnnxPruneError(f"--input-shape {name}:{','.join(map(str, shape))} has rank "
                             f"{len(shape)} but input '{name}' has rank {len(dims)}")
    for axis, dim in enumerate(dims):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            if shape is not None and shape[axis] != dim.dim_value:
                raise OnnxPruneError(
                    f"--input-shape {name}:{','.join(map(str, shape))} disagrees with the declared "
                    f"size {dim.dim_value} of input '{name}' at axis {axis}")
            continue
        if axis == 0:
            size = batch  # MACs are counted at batch 1 whatever the shape given
        elif shape is not None:
            size = shape[axis]
        elif dim.HasField("dim_value"):
            raise OnnxPruneError(f"input '{name}' has size {dim.dim_value} at axis {axis}; "
                                 f"every non-batch dimension must be positive")
        else:
            label = dim.dim_param or "?"
            rank = len(dims)
            raise OnnxPruneError(
                f"input '{name}' has a dynamic dimension '{label}' at axis {axis}; give the size "
                f"to analyse with --input-shape {name}:{','.join(f'D{i}' for i in range(rank))}")
        dim.Clear()
        dim.dim_value = size


_BIG_WEIGHT_ELEMENTS = 4096  # float weights at least this big are typed inputs in the copy
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                onnx.TensorProto.DOUBLE}


def _light_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy without value_info whose big float initializers are typed graph inputs instead.

    Shape inference needs the values of shape-carrying (integer) constants only; leaving the
    float weights out keeps the copy small, fast, and under protobuf's 2 GB for big models.
    """
    copy = onnx.ModelProto()
    for field, value in model.ListFields():
        if field.name != "graph":
            _copy_field(copy, field.name, value)
    graph = copy.graph
    for field, value in model.graph.ListFields():
        if field.name not in ("initializer", "value_info"):
            _copy_field(graph, field.name, value)
    declared = {v.name for v in model.graph.input}
    for init in model.graph.initializer:
        count = 1
        for d in init.dims:
            count *= d
        if init.data_type in _FLOAT_TYPES and count >= _BIG_WEIGHT_ELEMENTS:
            if init.name not in declared:
                graph.input.append(onnx.helper.make_tensor_value_info(
                    init.name, init.data_type, list(init.dims)))
        else:
            graph.initializer.append(init)
    return copy


def _copy_field(target, name: str, value) -> None:
    if hasattr(value, "extend") and hasattr(value, "__len__"):  # repeated field
        getattr(target, name).extend(value)
    elif hasattr(value, "CopyFrom"):  # message field
        getattr(target, name).CopyFrom(value)
    else:
        setattr(target, name, value)


def infer_shapes(model: onnx.ModelProto, batch: int = 1,
                 input_shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, Shape]:
    """Concrete shapes of every tensor the inference can resolve, with batch fixed.

    ``input_shapes`` sizes the dynamic non-batch input dims (see ``fixed_batch_copy``).
    Where shape arithmetic (Shape -> Gather -> Div -> ... -> Slice bounds) stops onnx's
    inference, the small integer values are folded and the inference is run once more.
    """
    from onnxprune.analysis.folding import fold_weight_paths

    model = fold_weight_paths(model).model  # constant expressions (pads, shapes) as values
    shapes = _infer_once(fixed_batch_copy(model, batch, input_shapes), model)
    folded: dict[str, np.ndarray] = {}
    for _ in range(_FOLD_ROUNDS):  # each round's shapes may let later shape arithmetic fold
        if all(o in shapes for n in model.graph.node for o in n.output if o):
            break
        more = fold_shape_values(model, shapes)
        if more.keys() <= folded.keys():
            break
        folded.update(more)
        fixed = fixed_batch_copy(model, batch, input_shapes)
        _inject(fixed, folded)
        shapes.update(_infer_once(fixed, model))
    _check_channels(model, shapes)
    _explain_unknown(model, shapes)
    return shapes


_FOLDABLE = {"Shape", "Gather", "Add", "Sub", "Mul", "Div", "Unsqueeze", "Squeeze", "Concat",
             "Slice", "Cast", "Identity", "Constant", "ConstantOfShape", "Floor", "Ceil", "Neg",
             "Min", "Max", "Equal", "Where", "Reshape", "Range"}
_FOLD_ROUNDS = 16  # inference/folding rounds: one per chain of computed shapes behind another
_FOLD_LIMIT = 64  # elements: shape arithmetic is small; real data is never folded


def fold_shape_values(model: onnx.ModelProto, shapes: dict[str, Shape]) -> dict[str, np.ndarray]:
    """Values of small integer tensors computed from static shapes and constants (batch fixed).

    Shape arithmetic goes through the one evaluator the torch executor uses too
    (``analysis.shapefold``); other integer ops on known values (Add, Div, Where, ...) through
    onnx's reference evaluator. Returns only tensors computed by nodes (not initializers or
    Constant nodes).
    """
    from onnx import numpy_helper

    from onnxprune.graph import opset_version

    known = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer
             if int(np.prod(t.dims)) <= _FOLD_LIMIT and t.data_type == onnx.TensorProto.INT64}
    opset = opset_version(model)
    folded: dict[str, np.ndarray] = {}
    for node in model.graph.node:
        if node.op_type not in _FOLDABLE or node.domain not in ("", "ai.onnx") or not node.output:
            continue
        try:
            value = _fold_node(node, known, shapes, opset)
        except Exception:  # anything the evaluator cannot do simply stays unknown
            value = None
        if value is None or value.size > _FOLD_LIMIT or value.dtype.kind not in "iu":
            continue
        known[node.output[0]] = value
        if node.op_type != "Constant":
            folded[node.output[0]] = value
    return folded


def _fold_node(node, known, shapes, opset: int):
    from onnx.reference import ReferenceEvaluator

    from onnxprune.analysis.shapefold import (SYMBOLIC, FoldSpec, array_of_sym, sym_of_array,
                                              symbolic_value)

    if node.op_type == "Constant":
        tensor = next((a.t for a in node.attribute if a.name == "value"), None)
        return None if tensor is None else onnx.numpy_helper.to_array(tensor)
    if node.op_type in SYMBOLIC:
        consts = {i: known[n] for i, n in enumerate(node.input) if n in known}
        spec = FoldSpec(node, opset, consts)
        value = symbolic_value(node.op_type, spec, [sym_of_array(known.get(n))
                                                    for n in node.input], shapes)
        if value is not None:
            array = array_of_sym(value)
            if array is not None:
                return array.astype(_folded_dtype(node, spec, known))
    inputs = [n for n in node.input if n]
    if not inputs or not all(n in known for n in inputs):
        return None
    return np.asarray(ReferenceEvaluator(node).run(None, {n: known[n] for n in inputs})[0])


def _folded_dtype(node, spec, known):
    if node.op_type == "Shape":
        return np.int64
    if node.op_type == "Cast":
        return np.int32 if spec.attr("to") == onnx.TensorProto.INT32 else np.int64
    first = known.get(node.input[0]) if node.input else None
    return first.dtype if first is not None else np.int64


def _inject(model: onnx.ModelProto, folded: dict[str, np.ndarray]) -> None:
    """Replace the nodes that compute ``folded`` tensors by initializers (for inference only)."""
    from onnx import numpy_helper

    keep = [n for n in model.graph.node if not (n.output and n.output[0] in folded)]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    model.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in folded.items())


# ops onnx 1.23's strict inference cannot pass (GroupNormalization's output gets no type,
# MeanVarianceNormalization's function body fails); each keeps its input's shape and type
_SHAPE_PRESERVING_STAND_INS = {"GroupNormalization", "MeanVarianceNormalization"}


def _stand_ins(fixed: onnx.ModelProto) -> None:
    """Replace those ops by Identity of their input, on the inference copy only (in place)."""
    for index, node in enumerate(fixed.graph.node):
        if node.op_type in _SHAPE_PRESERVING_STAND_INS and node.domain in ("", "ai.onnx") \
                and node.input and node.output:
            fixed.graph.node[index].CopyFrom(onnx.helper.make_node(
                "Identity", [node.input[0]], [node.output[0]], name=node.name))


def _infer_once(fixed: onnx.ModelProto, model: onnx.ModelProto) -> dict[str, Shape]:
    _stand_ins(fixed)
    try:
        # strict: a type or shape error in the model is bad input here, not a surgery bug later
        inferred = onnx.shape_inference.infer_shapes(fixed, check_type=True, strict_mode=True,
                                                     data_prop=True)
    except Exception as exc:
        raise OnnxPruneError(_inference_error(exc)) from None
    shapes: dict[str, Shape] = {}
    for value in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        shape = _concrete(value)
        if shape is not None:
            shapes[value.name] = shape
    for init in model.graph.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    shapes.setdefault(node.output[0], tuple(int(d) for d in attr.t.dims))
    return shapes


def declared_shape_notes(model: onnx.ModelProto, shapes: dict[str, Shape],
                         limit: int = 5) -> list[str]:
    """Declared value_info/output shapes that disagree with inference: dropped, not fatal."""
    notes = []
    declared = [v for v in (*model.graph.value_info, *model.graph.output)
                if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")]
    for value in declared:
        inferred = shapes.get(value.name)
        dims = value.type.tensor_type.shape.dim
        if inferred is None or len(inferred) != len(dims):
            continue
        for axis, (dim, size) in enumerate(zip(dims, inferred)):
            if dim.HasField("dim_value") and dim.dim_value != size and not (
                    axis == 0 and dim.dim_value == 1):
                notes.append(f"declared shape of '{value.name}' disagrees with inference at axis "
                             f"{axis} ({dim.dim_value} vs {size}); the declaration is ignored")
                break
    return notes[:limit] + ([f"... and {len(notes) - limit} more declared shapes"]
                            if len(notes) > limit else [])


def _inference_error(exc: Exception) -> str:
    """Strict inference's complaint as one line that names the node first."""
    import re

    text = " ".join(str(exc).split())
    found = re.search(r"\(op_type:(\w+), node name: ([^)]*)\): (?:\[\w+\] )?(.*)", text)
    if found:
        op, node, why = found.groups()
        return f"invalid graph: {op} node '{node}': {why[:240]} (strict shape inference)"
    return f"shape inference failed: {text[:300]}"


_MAC_OPS = set(MAC_OPS)


def _check_channels(model: onnx.ModelProto, shapes: dict[str, Shape]) -> None:
    """Conv input channels must match weight channels x group (shape inference does not check)."""
    for node in model.graph.node:
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        x, w = shapes.get(node.input[0]), shapes.get(node.input[1])
        if not x or not w or len(x) < 2 or len(w) < 2:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1) or 1
        if x[1] != w[1] * group:
            raise OnnxPruneError(
                f"Conv node '{node.name}': input '{node.input[0]}' has {x[1]} channels but weight "
                f"'{node.input[1]}' {list(w)} with group {group} expects {w[1] * group}")


def _explain_unknown(model: onnx.ModelProto, shapes: dict[str, Shape]) -> None:
    """A MAC op whose input shape is unknown: name the op that shape inference could not pass."""
    producer = {out: node for node in model.graph.node for out in node.output if out}
    for node in model.graph.node:
        if node.op_type not in _MAC_OPS or node.domain not in ("", "ai.onnx"):
            continue
        operands = [node.input[i] for i in OPERANDS.get(node.op_type, (0, 1))
                    if i < len(node.input)]
        missing = next((n for n in (*operands, *node.output[:1]) if n and n not in shapes), None)
        if missing is None:
            continue
        culprit = producer.get(missing)
        seen = set()
        while culprit is not None and culprit.name not in seen:  # walk up to the first unknown
            seen.add(culprit.name)
            unknown_in = next((producer[n] for n in culprit.input
                               if n and n not in shapes and n in producer), None)
            if unknown_in is None:
                break
            culprit = unknown_in
        if culprit is None:
            raise OnnxPruneError(f"cannot count MACs of {node.op_type} node '{node.name}': "
                                 f"shape of '{missing}' unknown")
        domain = f" of custom domain '{culprit.domain}'" if culprit.domain not in ("", "ai.onnx") \
            else ""
        what = "subgraph op " if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                                     for a in culprit.attribute) else "op "
        raise OnnxPruneError(
            f"{what}'{culprit.op_type}'{domain} (node '{culprit.name}'): shape inference cannot "
            f"pass it, so the shape of '{missing}' read by {node.op_type} node '{node.name}' is "
            f"unknown and MACs cannot be counted")


def _concrete(value: onnx.ValueInfoProto) -> Shape | None:
    if not value.type.HasField("tensor_type"):
        return None
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    dims = []
    for dim in tensor_type.shape.dim:
        if not dim.HasField("dim_value"):
            return None
        dims.append(int(dim.dim_value))
    return tuple(dims)
