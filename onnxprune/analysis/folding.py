"""Constant folding of weight paths: tensors that constant subgraphs compute become initializers.

Old exporters compute weights with ``ConstantOfShape``, ``Reshape`` of constants or ``Cast`` of
fp16 initializers; a weight that is not a constant cannot be sliced, so nothing would be
prunable. ``fold_weight_paths`` evaluates every constant subgraph with onnx's reference
evaluator (one run over the subgraph, no folder of our own) and replaces the tensors it hands
to the rest of the graph by initializers; every other node stays as it was. Tensors that the
analysis already reads as constants (an initializer or ``Constant`` node behind ``Identity``
nodes) are left alone. Where a folded weight was an fp16 tensor behind a ``Cast``,
``restore_casts`` puts the narrow initializer and the ``Cast`` back after surgery.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

_NOT_FOLDED = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
               "Multinomial", "Bernoulli", "If", "Loop", "Scan", "SequenceConstruct",
               "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}  # QDQ stays QDQ
_PASS_THROUGH = {"Identity"}  # ctx.const reads through these already
_NARROW = {onnx.TensorProto.FLOAT16}  # bf16 weights stay folded to their Cast's type
_MAX_FOLDED_BYTES = 1 << 31


@dataclass
class Folded:
    """The folded model and the consumer slots whose weight was a narrow float behind a Cast."""

    model: onnx.ModelProto
    narrow_slots: dict[tuple[str, int], int] = field(default_factory=dict)  # -> TensorProto dtype
    tensors: tuple[str, ...] = ()  # names that became initializers


def fold_weight_paths(model: onnx.ModelProto) -> Folded:
    """A copy of ``model`` whose constant-computed tensors are initializers (or ``model``)."""
    producer, constant = _constant_nodes(model)
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, index))
    outputs = {o.name for o in model.graph.output}
    boundary = [name for name in producer if name in outputs or any(
        id(user) not in constant for user, _ in consumers.get(name, ()))]
    boundary = [name for name in boundary if not _already_constant(name, producer)]
    if not boundary:
        return Folded(model)
    values = _evaluate(model, producer, boundary)
    if values is None:
        return Folded(model)
    folded = _rebuild(model, values)
    narrow = {}
    for name in values:
        node = producer[name]
        if node.op_type == "Cast" and _dtype_of(node.input[0], model, producer) in _NARROW:
            for user, index in consumers.get(name, ()):
                narrow[(user.name, index)] = _dtype_of(node.input[0], model, producer)
    return Folded(folded, narrow, tuple(values))


def _constant_nodes(model: onnx.ModelProto):
    """Tensor -> producing node for every node whose inputs are all constant; their ids."""
    known = {t.name for t in model.graph.initializer}
    producer: dict[str, onnx.NodeProto] = {}
    constant: set[int] = set()
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type in _NOT_FOLDED or \
                any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                    for a in node.attribute):
            continue
        if all(not name or name in known for name in node.input):
            constant.add(id(node))
            for out in node.output:
                if out:
                    known.add(out)
                    producer[out] = node
    return producer, constant


def _already_constant(name: str, producer) -> bool:
    node = producer.get(name)
    while node is not None and node.op_type in _PASS_THROUGH:
        node = producer.get(node.input[0])
    return node is None or node.op_type == "Constant"


def _evaluate(model, producer, boundary) -> dict[str, np.ndarray] | None:
    """The boundary tensors' values from one reference-evaluator run over their subgraph."""
    from onnx.reference import ReferenceEvaluator

    needed, stack = [], list(boundary)
    seen: set[int] = set()
    while stack:
        node = producer.get(stack.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        needed.append(node)
        stack.extend(n for n in node.input if n)
    order = [n for n in model.graph.node if id(n) in seen]
    names = {n for node in order for n in node.input}
    inits = [t for t in model.graph.initializer if t.name in names]
    graph = onnx.helper.make_graph(order, "fold", [], [onnx.ValueInfoProto(name=n)
                                                      for n in boundary], inits)
    sub = onnx.helper.make_model(graph, opset_imports=list(model.opset_import))
    sub.ir_version = max(model.ir_version, 4)
    try:
        results = ReferenceEvaluator(sub).run(None, {})
    except Exception:  # the evaluator cannot run it: the graph stays as it was
        return None
    values = {}
    for name, value in zip(boundary, results):
        value = np.asarray(value)
        if value.dtype == object or value.nbytes > _MAX_FOLDED_BYTES:
            return None
        values[name] = value
    return values


def _rebuild(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> onnx.ModelProto:
    """``model`` with ``values`` as initializers and the nodes only they needed removed."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    nodes = [n for n in graph.node if not any(o in values for o in n.output if o)]
    needed = {o.name for o in graph.output}
    live = []
    for node in reversed(nodes):  # dead-code elimination from the outputs
        if any(o in needed for o in node.output) or not node.output:
            live.append(node)
            needed.update(n for n in node.input if n)
    live.reverse()
    del graph.node[:]
    graph.node.extend(live)
    kept = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in values.items())
    inits = {t.name for t in graph.initializer}
    if copy.ir_version < 4:  # IR 3: every initializer is also a graph input
        listed = {i.name for i in graph.input}
        keep_inputs = [i for i in graph.input if i.name in needed or i.name not in
                       {t.name for t in model.graph.initializer}]
        del graph.input[:]
        graph.input.extend(keep_inputs)
        for name, value in values.items():
            if name not in listed:
                graph.input.append(onnx.helper.make_tensor_value_info(
                    name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)))
    drop = set(values)
    kept_info = [v for v in graph.value_info if v.name not in drop and v.name not in inits]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    return copy


def _dtype_of(name: str, model: onnx.ModelProto, producer) -> int | None:
    """The element type of a constant tensor (through Identity nodes), or None."""
    node = producer.get(name)
    while node is not None and node.op_type in _PASS_THROUGH:
        name = node.input[0]
        node = producer.get(name)
    if node is not None and node.op_type == "Constant":
        for a in node.attribute:
            if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                return a.t.data_type
    return next((t.data_type for t in model.graph.initializer if t.name == name), None)


def restore_casts(graph, narrow_slots: dict[tuple[str, int], int]) -> None:
    """Put fp16 weights back behind a ``Cast`` in a (pruned) gs graph, in place.

    Only where the sliced float32 constant converts to the narrow type and back exactly, which
    holds for every weight that came from one.
    """
    import onnx_graphsurgeon as gs

    nodes = {n.name: n for n in graph.nodes}
    for (node_name, index), dtype in narrow_slots.items():
        node = nodes.get(node_name)
        if node is None or index >= len(node.inputs):
            continue
        tensor = node.inputs[index]
        if not isinstance(tensor, gs.Constant):
            continue
        values = np.asarray(tensor.values)
        narrow_np = onnx.helper.tensor_dtype_to_np_dtype(dtype)
        try:
            narrow = values.astype(narrow_np)
        except (TypeError, ValueError):
            continue
        if values.dtype.kind != "f" or not np.array_equal(narrow.astype(values.dtype), values):
            continue
        to = onnx.helper.np_dtype_to_tensor_dtype(values.dtype)
        source = gs.Constant(f"{tensor.name}__narrow", narrow)
        cast_out = gs.Variable(f"{tensor.name}__cast", dtype=values.dtype, shape=values.shape)
        graph.nodes.append(gs.Node("Cast", f"{node_name}__cast_{index}", attrs={"to": to},
                                   inputs=[source], outputs=[cast_out]))
        node.inputs[index] = cast_out
