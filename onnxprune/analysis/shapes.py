"""Shape inference with the batch fixed to 1: every tensor's concrete shape, or an error."""

from __future__ import annotations

import onnx

from onnxprune.errors import OnnxPruneError

Shape = tuple[int, ...]


def graph_input_names(model: onnx.ModelProto) -> list[str]:
    """The graph inputs that are real inputs (not initializers listed as inputs)."""
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def fixed_batch_copy(model: onnx.ModelProto, batch: int = 1) -> onnx.ModelProto:
    """A copy of ``model`` whose symbolic input dims are fixed: the leading one to ``batch``.

    A symbolic dim anywhere else cannot be counted exactly and is refused by name.
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.value_info[:]
    real_inputs = set(graph_input_names(model))
    for value in copy.graph.input:
        if value.name not in real_inputs or not value.type.HasField("tensor_type"):
            continue
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape"):
            raise OnnxPruneError(f"input '{value.name}' has no shape; export with a static shape")
        for axis, dim in enumerate(tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            if axis != 0:
                label = dim.dim_param or "?"
                raise OnnxPruneError(
                    f"input '{value.name}' has a dynamic dimension '{label}' at axis {axis}; "
                    f"only the batch axis may be dynamic"
                )
            dim.Clear()
            dim.dim_value = batch
    for value in copy.graph.output:
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            for dim in value.type.tensor_type.shape.dim:
                if not dim.HasField("dim_value"):
                    dim.Clear()
    return copy


def infer_shapes(model: onnx.ModelProto, batch: int = 1) -> dict[str, Shape]:
    """Concrete shapes of every tensor the inference can resolve, with batch fixed."""
    fixed = fixed_batch_copy(model, batch)
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, strict_mode=False, data_prop=True)
    except Exception as exc:
        raise OnnxPruneError(f"shape inference failed: {' '.join(str(exc).split())[:300]}") from None
    shapes: dict[str, Shape] = {}
    for value in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        shape = _concrete(value)
        if shape is not None:
            shapes[value.name] = shape
    for init in model.graph.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
    return shapes


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
