"""The model summary ``analyze`` prints: I/O, opset, op counts, parameters and MACs per node."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx

from onnxprune.analysis.shapes import graph_input_names, infer_shapes
from onnxprune.graph import opset_version
from onnxprune.macs import model_mac_exprs, shape_size

_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
    onnx.TensorProto.DOUBLE,
}


def _is_weight(tensor: onnx.TensorProto) -> bool:
    """A floating-point tensor with at least one axis (scalars such as Clip bounds are not)."""
    return tensor.data_type in _FLOAT_TYPES and len(tensor.dims) > 0


def count_params(model: onnx.ModelProto) -> int:
    """Elements of every floating-point weight: initializers and Constant-node tensors."""
    total = sum(int(np.prod(t.dims)) for t in model.graph.initializer if _is_weight(t))
    for node in model.graph.node:
        if node.op_type != "Constant":
            continue
        for a in node.attribute:
            if a.name == "value" and _is_weight(a.t):
                total += int(np.prod(a.t.dims))
    return total


def count_macs(model: onnx.ModelProto, shapes=None, input_shapes=None) -> int:
    """Total MACs of the model at batch 1 (dynamic input dims sized by ``input_shapes``)."""
    shapes = shapes if shapes is not None else infer_shapes(model, input_shapes=input_shapes)
    size = shape_size(shapes)
    return int(round(sum(e.evaluate(size) for e in model_mac_exprs(model, shapes))))


def _io(values, shapes) -> list[dict]:
    rows = []
    for v in values:
        tensor_type = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in tensor_type.shape.dim]
        rows.append({
            "name": v.name,
            "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
            if tensor_type.elem_type else "unknown",
            "shape": dims,
        })
    return rows


def summarize(model: onnx.ModelProto, shapes=None, input_shapes=None) -> dict:
    """A JSON-ready summary of ``model`` (dynamic input dims sized by ``input_shapes``)."""
    shapes = shapes if shapes is not None else infer_shapes(model, input_shapes=input_shapes)
    size = shape_size(shapes)
    exprs = model_mac_exprs(model, shapes)
    real_inputs = set(graph_input_names(model))
    per_node = [{"node": e.node, "op": e.op, "macs": int(e.evaluate(size))} for e in exprs]
    return {
        "opset": opset_version(model),
        "inputs": _io([v for v in model.graph.input if v.name in real_inputs], shapes),
        "outputs": _io(model.graph.output, shapes),
        "nodes": len(model.graph.node),
        "op_counts": dict(sorted(Counter(n.op_type for n in model.graph.node).items())),
        "params": count_params(model),
        "macs": int(sum(r["macs"] for r in per_node)),
        "macs_per_node": per_node,
    }
