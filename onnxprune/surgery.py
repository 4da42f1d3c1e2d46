"""Graph surgery: remove the channels a plan does not keep, and build the masked reference.

The pruned graph slices every member constant, fixes attributes and shape constants, and is
re-inferred and checked. The masked reference is the original graph with the removed
channels multiplied by zero where they are summed over: the pruned graph must equal it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.analysis.folding import restore_casts
from onnxprune.analysis.groups import ChannelAnalysis, analyze_channels, keep_mask
from onnxprune.analysis.shapes import infer_shapes
from onnxprune.errors import OnnxPruneError
from onnxprune.graph import ensure_node_names, opset_version


def validate_keep(analysis: ChannelAnalysis, keep: Mapping[str, Sequence[int]]) -> None:
    """Refuse plans that name unknown or barrier groups, bad or duplicate indices, or none."""
    if not isinstance(keep, Mapping):
        raise OnnxPruneError("plan: 'keep' must map group ids to lists of channel indices")
    for group_id, indices in keep.items():
        group = analysis.group(group_id) if any(g.id == group_id for g in analysis.groups) \
            else None
        if group is None:
            raise OnnxPruneError(f"plan: unknown group id '{group_id}'")
        if not isinstance(indices, (list, tuple, np.ndarray)) or \
                not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool)
                        for i in indices):
            raise OnnxPruneError(f"plan: group '{group_id}' must list integer channel indices")
        values = [int(i) for i in indices]
        if not values:
            raise OnnxPruneError(f"plan: group '{group_id}' keeps zero channels")
        bad = [i for i in values if i < 0 or i >= group.channels]
        if bad:
            raise OnnxPruneError(f"plan: group '{group_id}' index {bad[0]} out of range "
                                 f"0..{group.channels - 1}")
        if len(set(values)) != len(values):
            raise OnnxPruneError(f"plan: group '{group_id}' lists a channel index twice")
        if not group.prunable and len(values) != group.channels:
            raise OnnxPruneError(f"plan: group '{group_id}' is not prunable ({group.reason})")
    _check_no_empty_slice(analysis, keep_mask(analysis, keep))


def _check_no_empty_slice(analysis: ChannelAnalysis, channel_kept: np.ndarray) -> None:
    """Refuse a plan that removes every channel of a tensor read or sliced somewhere.

    A group keeps at least one channel, but a Slice or Split of it may still lose all of its
    positions; the pruned graph would then carry a tensor with zero channels.
    """
    for item in (*analysis.reads, *analysis.members):
        channels = analysis.channel_of_atom[item.ids]
        if channels.size == 0 or (channels < 0).any() or channel_kept[channels].any():
            continue
        group = next(g for g in analysis.groups if g.offset <= channels[0] < g.offset + g.channels)
        raise OnnxPruneError(f"plan: group '{group.id}' keeps none of the channels "
                             f"{_span(channels - group.offset)} that node '{item.node}' reads")


def _span(indices: np.ndarray) -> str:
    values = sorted(set(indices.tolist()))
    return f"{values[0]}..{values[-1]}" if len(values) > 1 else str(values[0])


def _prepare(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    ensure_node_names(copy)
    return copy


def prune_model(model: onnx.ModelProto, keep: Mapping[str, Sequence[int]],
                analysis: ChannelAnalysis | None = None, check: bool = True,
                input_shapes: Mapping[str, Sequence[int]] | None = None) -> onnx.ModelProto:
    """The model with every channel not in ``keep`` removed (absent groups keep all).

    ``input_shapes`` sizes dynamic input dims for the analysis; the pruned model keeps the
    declared dynamic dims. A given ``analysis`` is used up: its graph is edited in place, so
    analyse again for another plan or for ``masked_reference``.
    """
    model = _prepare(model)
    analysis = analysis or analyze_channels(model, input_shapes=input_shapes)
    validate_keep(analysis, keep)
    channel_kept = keep_mask(analysis, keep)
    atom_kept = np.where(analysis.channel_of_atom < 0, True,
                         channel_kept[np.maximum(analysis.channel_of_atom, 0)])

    def kept(ids: np.ndarray) -> np.ndarray:
        return atom_kept[ids]

    graph = analysis.graph
    nodes = {n.name: n for n in graph.nodes}
    for member in analysis.members:
        node = nodes[member.node]
        const = node.inputs[member.index]
        positions = np.flatnonzero(kept(member.ids))
        if len(positions) == len(member.ids):
            continue
        const.values = np.take(np.asarray(const.values), positions, axis=member.axis)
    for fixup in analysis.fixups:
        fixup.apply(nodes[fixup.node], kept)
    restore_casts(graph, analysis.narrow_slots)
    graph.toposort()  # fixups may add nodes (a computed Reshape target's new channel entry)
    return _export(graph, model, check)


def _export(graph: gs.Graph, original: onnx.ModelProto, check: bool) -> onnx.ModelProto:
    graph.cleanup(remove_unused_graph_inputs=False)
    outputs = {o.name for o in graph.outputs}
    inputs = {i.name for i in graph.inputs}
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Variable) and tensor.name not in outputs | inputs:
            tensor.shape = None
            tensor.dtype = None
    pruned = gs.export_onnx(graph, do_type_check=False)
    pruned.ir_version = original.ir_version
    del pruned.opset_import[:]
    pruned.opset_import.extend(original.opset_import)
    pruned.producer_name = "onnxprune"
    for prop in original.metadata_props:
        pruned.metadata_props.add().CopyFrom(prop)
    del pruned.graph.value_info[:]
    if pruned.ir_version < 4:
        _list_initializers_as_inputs(pruned.graph)
    _drop_stale_output_dims(pruned)
    try:
        pruned = onnx.shape_inference.infer_shapes(pruned, strict_mode=True)
        if check:
            onnx.checker.check_model(pruned, full_check=pruned.ByteSize() < 2**31 - 1)
    except Exception as exc:
        raise OnnxPruneError(f"surgery produced an invalid graph (a bug): "
                             f"{' '.join(str(exc).split())[:300]}", exit_code=3) from None
    return pruned


def _drop_stale_output_dims(model: onnx.ModelProto) -> None:
    """Declared output dims that are invalid (<= 0) or disagree with inference become unknown
    (in place; strict inference would refuse the graph over a stale declaration)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for value in copy.graph.output:
        value.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(copy).graph.output
    except Exception:
        return
    for value, found in zip(model.graph.output, inferred):
        declared = value.type.tensor_type
        real = found.type.tensor_type
        if not declared.HasField("shape"):
            continue
        real_dims = list(real.shape.dim) if real.HasField("shape") else []
        for axis, dim in enumerate(declared.shape.dim):
            other = real_dims[axis] if axis < len(real_dims) else None
            stale = other is not None and other.HasField("dim_value") and \
                dim.HasField("dim_value") and other.dim_value != dim.dim_value
            if (dim.HasField("dim_value") and dim.dim_value <= 0) or stale:
                dim.Clear()


def _list_initializers_as_inputs(graph: onnx.GraphProto) -> None:
    """IR 3: every initializer is also a graph input, with its (possibly sliced) shape."""
    inits = {t.name: t for t in graph.initializer}
    real = [i for i in graph.input if i.name not in inits]
    del graph.input[:]
    graph.input.extend(real)
    graph.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                       for t in inits.values())


def masked_reference(model: onnx.ModelProto, keep: Mapping[str, Sequence[int]],
                     analysis: ChannelAnalysis | None = None,
                     input_shapes: Mapping[str, Sequence[int]] | None = None) -> onnx.ModelProto:
    """The original graph with removed channels zeroed wherever they are summed over (a given
    ``analysis`` is used up, as in ``prune_model``)."""
    model = _prepare(model)
    analysis = analysis or analyze_channels(model, input_shapes=input_shapes)
    validate_keep(analysis, keep)
    channel_kept = keep_mask(analysis, keep)
    shapes = analysis.shapes
    graph = analysis.graph
    elem_types = _elem_types(model)
    nodes = {n.name: n for n in graph.nodes}
    for number, read in enumerate(analysis.reads):
        channels = analysis.channel_of_atom[read.ids]
        mask = np.where(channels < 0, True, channel_kept[np.maximum(channels, 0)])
        if mask.all():
            continue
        node = nodes[read.node]
        tensor = node.inputs[read.index]
        rank = len(shapes[tensor.name])
        dtype = _float_dtype(tensor, elem_types)
        shape = [1] * rank
        shape[read.axis] = len(mask)
        const = gs.Constant(f"onnxprune_mask_{number}", mask.astype(dtype).reshape(shape))
        masked = gs.Variable(f"{tensor.name}__masked_{number}", dtype=None)
        graph.nodes.append(gs.Node("Mul", f"onnxprune_mask_mul_{number}",
                                   inputs=[tensor, const], outputs=[masked]))
        node.inputs[read.index] = masked
    graph.toposort()
    return _export(graph, model, check=True)


def _float_dtype(tensor: gs.Tensor, elem_types: dict[str, int]):
    """The element type of a tensor that a mask multiplies (float32 when nothing says)."""
    if tensor.dtype is not None:
        try:
            return np.dtype(tensor.dtype)
        except TypeError:
            pass
    elem = elem_types.get(tensor.name)
    if elem:
        return onnx.helper.tensor_dtype_to_np_dtype(elem)
    return np.dtype(np.float32)


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Every tensor's element type from onnx's (lenient) type inference."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        return {}
    graph = inferred.graph
    return {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.value_info,
                                                           *graph.output)
            if v.type.HasField("tensor_type")}


def plan_macs(model: onnx.ModelProto, keep: Mapping[str, Sequence[int]],
              input_shapes: Mapping[str, Sequence[int]] | None = None) -> int:
    """MACs the pruned model will have, from the analysis (without doing the surgery)."""
    model = _prepare(model)
    analysis = analyze_channels(model, infer_shapes(model, input_shapes=input_shapes))
    validate_keep(analysis, keep)
    return analysis.macs(keep_mask(analysis, keep))


def opset(model: onnx.ModelProto) -> int:
    return opset_version(model)
