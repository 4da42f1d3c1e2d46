"""Structural checks of an untrusted model, run before anything else reads it.

Each problem (a cycle, a dangling input, a duplicate output, a missing or truncated
initializer, a wrong-rank weight, NaN/Inf weights) becomes a one-line ``OnnxPruneError``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.errors import OnnxPruneError

MAX_PROTO_BYTES = 2**31 - 1  # protobuf's own limit for one message

# Ops whose weight input (index 1) must be a tensor of rank >= 3: [out, in/groups, *kernel].
_CONV_LIKE = {"Conv", "ConvTranspose", "ConvInteger", "DeformConv"}
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                onnx.TensorProto.DOUBLE}


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


def _run_checker(model: bytes | Path, path: Path) -> None:
    """``onnx.checker`` without its shape-inference pass; its message shortened to one line."""
    if isinstance(model, bytes) and len(model) > MAX_PROTO_BYTES:
        return
    try:
        onnx.checker.check_model(model if isinstance(model, bytes) else str(model),
                                 full_check=False)
    except Exception as exc:
        text = " ".join(str(exc).split())
        text = re.sub(r"^\[ONNXRuntimeError\][^:]*:\s*", "", text)
        text = text.split("==>")[-1].strip() if "==>" in text else text
        raise OnnxPruneError(f"{path}: invalid ONNX model: {text[:300]}") from None


# --- graph structure ----------------------------------------------------------------------------


def check_structure(model: onnx.ModelProto, where: str = "model") -> None:
    """Refuse, in one line, graphs the checker lets through or describes poorly.

    Duplicate producers of a tensor, node inputs nothing produces (dangling, or a missing
    initializer), cycles, initializers whose data does not match their shape, and conv/Gemm
    weights of the wrong rank. Only the main graph; subgraphs are left to the checker.
    """
    graph = model.graph
    produced: dict[str, str] = {}
    for value in graph.input:
        produced.setdefault(value.name, f"graph input '{value.name}'")
    for init in graph.initializer:
        if init.name in produced and not produced[init.name].startswith("graph input"):
            raise OnnxPruneError(f"{where}: initializer '{init.name}' is defined twice")
        produced[init.name] = f"initializer '{init.name}'"
    for init in graph.sparse_initializer:
        produced[init.values.name] = f"initializer '{init.values.name}'"
    producer_node: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        label = _node_label(node, index)
        for out in node.output:
            if not out:
                continue
            if out in produced:
                raise OnnxPruneError(
                    f"{where}: duplicate output: tensor '{out}' is produced by {label} and also by "
                    f"{produced[out]} (a graph must assign each tensor once)")
            produced[out] = label
            producer_node[out] = index
    initializers = {t.name for t in graph.initializer}
    for index, node in enumerate(graph.node):
        for position, name in enumerate(node.input):
            if name and name not in produced:
                what = ("missing initializer" if node.op_type in _CONV_LIKE | {"Gemm", "MatMul"}
                        and position >= 1 else "dangling input")
                raise OnnxPruneError(
                    f"{where}: {what}: input '{name}' of {_node_label(node, index)} is not produced "
                    f"by any node, initializer or graph input")
    cycle = _find_cycle(graph, producer_node)
    if cycle:
        names = " -> ".join(_node_label(graph.node[i], i) for i in cycle[:6])
        raise OnnxPruneError(f"{where}: the graph has a cycle: {names}"
                             + (" -> ..." if len(cycle) > 6 else ""))
    for init in graph.initializer:
        _check_tensor_data(init, where)
    constants = {}
    for index, node in enumerate(graph.node):
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    _check_tensor_data(attr.t, where, node.output[0])
                    constants[node.output[0]] = list(attr.t.dims)
    ranks = {t.name: len(t.dims) for t in graph.initializer}
    ranks.update({k: len(v) for k, v in constants.items()})
    for index, node in enumerate(graph.node):
        _check_weight_ranks(node, index, ranks, where, initializers)


def _node_label(node: onnx.NodeProto, index: int) -> str:
    return f"{node.op_type} node '{node.name or f'#{index}'}'"


def _find_cycle(graph: onnx.GraphProto, producer_node: dict[str, int]) -> list[int]:
    """Node indices on one cycle of the main graph (empty when acyclic); Kahn's algorithm."""
    count = len(graph.node)
    users: list[list[int]] = [[] for _ in range(count)]
    pending = [0] * count
    for index, node in enumerate(graph.node):
        deps = {producer_node[name] for name in node.input if name in producer_node}
        pending[index] = len(deps)
        for dep in deps:
            users[dep].append(index)
    ready = [i for i in range(count) if pending[i] == 0]
    done = 0
    while ready:
        current = ready.pop()
        done += 1
        for user in users[current]:
            pending[user] -= 1
            if pending[user] == 0:
                ready.append(user)
    if done == count:
        return []
    # walk back through unfinished producers from an unfinished node until a node repeats
    node = next(i for i in range(count) if pending[i] > 0)
    seen: dict[int, int] = {}
    path: list[int] = []
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(producer_node[name] for name in graph.node[node].input
                    if name in producer_node and pending[producer_node[name]] > 0)
    loop = path[seen[node]:]
    return loop[::-1]


def _check_tensor_data(tensor: onnx.TensorProto, where: str, name: str | None = None) -> None:
    """The stored element count must match the dims (raw bytes or the typed field)."""
    name = name or tensor.name
    if any(d < 0 for d in tensor.dims):
        raise OnnxPruneError(f"{where}: tensor '{name}' has a negative dimension {list(tensor.dims)}")
    if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.data_type in (
            onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return
    count = int(np.prod(tensor.dims, dtype=np.int64)) if tensor.dims else 1
    try:
        np_dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
    except Exception:
        return
    if tensor.HasField("raw_data"):
        itemsize = np.dtype(np_dtype).itemsize
        bits = {onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4}.get(tensor.data_type)
        expected = (count * bits + 7) // 8 if bits else count * itemsize
        if len(tensor.raw_data) != expected:
            raise OnnxPruneError(
                f"{where}: initializer '{name}' holds {len(tensor.raw_data)} bytes of data but its "
                f"shape {list(tensor.dims)} needs {expected}")
        return
    field = onnx.helper.tensor_dtype_to_field(tensor.data_type)
    stored = len(getattr(tensor, field))
    if tensor.data_type in (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128):
        stored //= 2
    if stored != count and tensor.data_type not in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        raise OnnxPruneError(
            f"{where}: initializer '{name}' holds {stored} values but its shape "
            f"{list(tensor.dims)} needs {count} (missing or truncated initializer data)")


def _check_weight_ranks(node: onnx.NodeProto, index: int, ranks: dict[str, int], where: str,
                        initializers: set[str]) -> None:
    def rank_of(position: int) -> int | None:
        if len(node.input) > position and node.input[position] in ranks:
            return ranks[node.input[position]]
        return None

    label = _node_label(node, index)
    if node.op_type in _CONV_LIKE or node.op_type == "QLinearConv":
        position = 3 if node.op_type == "QLinearConv" else 1
        rank = rank_of(position)
        if rank is not None and rank < 3:
            raise OnnxPruneError(
                f"{where}: wrong-rank weight: {label} has weight '{node.input[position]}' of rank "
                f"{rank}; a convolution weight has rank >= 3 [out, in/groups, *kernel]")
    elif node.op_type == "Gemm":
        for position in (0, 1):
            rank = rank_of(position)
            if rank is not None and rank != 2:
                raise OnnxPruneError(
                    f"{where}: wrong-rank weight: {label} input '{node.input[position]}' has rank "
                    f"{rank}; Gemm takes rank-2 matrices")
    elif node.op_type == "BatchNormalization":
        for position in range(1, 5):
            rank = rank_of(position)
            if rank is not None and rank != 1:
                raise OnnxPruneError(
                    f"{where}: wrong-rank weight: {label} input '{node.input[position]}' has rank "
                    f"{rank}; BatchNormalization parameters have rank 1")


def check_finite_weights(model: onnx.ModelProto, where: str = "model") -> None:
    """Refuse floating-point weights (initializers, Constant nodes) holding NaN or Inf."""
    def check(tensor: onnx.TensorProto, name: str) -> None:
        if tensor.data_type not in _FLOAT_TYPES or tensor.data_location == onnx.TensorProto.EXTERNAL:
            return
        try:
            values = numpy_helper.to_array(tensor)
        except Exception as exc:
            raise OnnxPruneError(f"{where}: tensor '{name}' cannot be decoded ({_short(exc)})") from None
        finite = np.isfinite(values.astype(np.float32, copy=False)) if values.dtype.kind != "f" \
            else np.isfinite(values)
        if not finite.all():
            bad = values.reshape(-1)[~finite.reshape(-1)]
            what = "NaN" if np.isnan(bad.astype(np.float32)).any() else "Inf"
            raise OnnxPruneError(
                f"{where}: weight '{name}' contains {what} values ({int(bad.size)} of "
                f"{int(values.size)}); refusing a model with non-finite weights")

    for init in model.graph.initializer:
        check(init, init.name)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    check(attr.t, node.output[0])
