"""Loading and saving ONNX models safely, and small helpers over ModelProto.

Loading never follows external-data references outside the model's folder and never
answers bad input with a traceback: every problem becomes an ``OnnxPruneError``.
Saving is atomic: a temporary file in the destination folder, then a rename.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.errors import OnnxPruneError

MAX_PROTO_BYTES = 2**31 - 1  # protobuf's own limit for one message
MAX_MODEL_BYTES = 64 * 2**30  # refuse anything bigger than this in all (weights included)


@dataclass(frozen=True)
class LoadedModel:
    """A model and where it came from."""

    model: onnx.ModelProto
    path: Path
    used_external_data: bool


def load_model(path: str | os.PathLike) -> LoadedModel:
    """Load an ONNX model from ``path`` with its external data, checked for safety."""
    path = Path(path)
    _check_model_path(path)
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise OnnxPruneError(f"{path}: not a valid ONNX model ({_short(exc)})") from None
    if not model.HasField("graph") or len(model.graph.node) == 0:
        raise OnnxPruneError(f"{path}: not a valid ONNX model (no graph nodes)")
    external = _external_tensors(model)
    if external:
        _load_external(model, path, external)
    return LoadedModel(model=model, path=path, used_external_data=bool(external))


def _check_model_path(path: Path) -> None:
    if not path.exists():
        raise OnnxPruneError(f"{path}: no such file")
    if path.is_dir():
        raise OnnxPruneError(f"{path}: is a directory, not an ONNX file")
    if not path.is_file():
        raise OnnxPruneError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise OnnxPruneError(f"{path}: empty file, not an ONNX model")
    if size > MAX_PROTO_BYTES:
        raise OnnxPruneError(
            f"{path}: {size} bytes is over protobuf's 2 GB limit; store weights as external data"
        )
    if not os.access(path, os.R_OK):
        raise OnnxPruneError(f"{path}: permission denied")


def _external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    return [t for t in _get_all_tensors(model) if uses_external_data(t)]


def _load_external(model: onnx.ModelProto, path: Path, tensors: list[onnx.TensorProto]) -> None:
    """Read each external tensor's bytes, refusing locations outside the model's folder."""
    base = path.resolve().parent
    total = 0
    for tensor in tensors:
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        target = _safe_location(base, location, tensor.name)
        offset = int(info.get("offset", 0) or 0)
        length = info.get("length")
        size = target.stat().st_size
        length = int(length) if length else size - offset
        if offset < 0 or length < 0 or offset + length > size:
            raise OnnxPruneError(
                f"external data of tensor '{tensor.name}' lies outside '{location}' "
                f"(offset {offset}, length {length}, file {size} bytes)"
            )
        total += length
        if total > MAX_MODEL_BYTES:
            raise OnnxPruneError(f"{path}: external data over {MAX_MODEL_BYTES} bytes")
        with open(target, "rb") as handle:
            handle.seek(offset)
            tensor.raw_data = handle.read(length)
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]


def _safe_location(base: Path, location: str, tensor_name: str) -> Path:
    if not location:
        raise OnnxPruneError(f"external data of tensor '{tensor_name}' has no location")
    if os.path.isabs(location) or location.startswith(("/", "\\")) or ":" in location[:3]:
        raise OnnxPruneError(
            f"external data location '{location}' of tensor '{tensor_name}' is an absolute path; refused"
        )
    parts = Path(location).parts
    if ".." in parts:
        raise OnnxPruneError(
            f"external data location '{location}' of tensor '{tensor_name}' contains '..'; refused"
        )
    target = (base / location).resolve()
    if base not in target.parents:
        raise OnnxPruneError(
            f"external data location '{location}' of tensor '{tensor_name}' resolves outside "
            f"the model's folder; refused"
        )
    if not target.is_file():
        raise OnnxPruneError(
            f"external data file '{location}' of tensor '{tensor_name}' is missing"
        )
    return target


def save_model(
    model: onnx.ModelProto,
    path: str | os.PathLike,
    external_data: bool | None = None,
    force: bool = False,
    protect: tuple[str | os.PathLike, ...] = (),
) -> Path:
    """Write ``model`` to ``path`` atomically; weights go to ``<name>.data`` when asked or > 2 GB.

    ``protect`` lists input files that must never be overwritten unless ``force`` is set.
    """
    path = Path(path)
    if path.exists() and path.is_dir():
        raise OnnxPruneError(f"{path}: output path is a directory")
    folder = path.resolve().parent
    if not folder.is_dir():
        raise OnnxPruneError(f"{path.parent}: output folder does not exist")
    for guarded in protect:
        if Path(guarded).exists() and Path(guarded).resolve() == path.resolve() and not force:
            raise OnnxPruneError(f"{path}: refusing to overwrite the input model (use --force)")
    if external_data is None:
        external_data = model.ByteSize() > MAX_PROTO_BYTES
    with tempfile.TemporaryDirectory(prefix=".onnxprune-", dir=folder) as tmp:
        tmp_model = Path(tmp) / path.name
        data_name = path.name + ".data"
        if external_data:
            onnx.save_model(
                model,
                str(tmp_model),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_name,
                size_threshold=1024,
            )
        else:
            onnx.save_model(model, str(tmp_model))
        if external_data:
            os.replace(Path(tmp) / data_name, folder / data_name)
        os.replace(tmp_model, folder / path.name)
    return path


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w"):
    """Open a temporary file beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    folder = path.resolve().parent
    if not folder.is_dir():
        raise OnnxPruneError(f"{path.parent}: output folder does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def initializer_arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every initializer and Constant-node tensor of the main graph, as numpy arrays."""
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    arrays[node.output[0]] = numpy_helper.to_array(attr.t)
    return arrays


def opset_version(model: onnx.ModelProto) -> int:
    """The default-domain opset the model imports."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise OnnxPruneError("model imports no default-domain opset")


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


def ensure_node_names(model: onnx.ModelProto) -> None:
    """Give every unnamed (or duplicate-named) node a deterministic, unique name in place."""
    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):
        name = node.name
        if not name or name in seen:
            name = f"{node.op_type}_{index}"
            while name in seen:
                name += "_"
            node.name = name
        seen.add(name)
