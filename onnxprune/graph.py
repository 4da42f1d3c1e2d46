"""Loading and saving ONNX models safely, and small helpers over ModelProto.

Loading never follows external-data references outside the model's folder and never
answers bad input with a traceback: every problem becomes an ``OnnxPruneError``.
Saving is atomic: a temporary file in the destination folder, then a rename.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.errors import OnnxPruneError

MAX_PROTO_BYTES = 2**31 - 1  # protobuf's own limit for one message
MAX_MODEL_BYTES = 64 * 2**30  # refuse anything bigger than this in all (weights included)
TEMP_PREFIX = ".onnxprune-tmp-"  # temporary outputs: f"{TEMP_PREFIX}{pid}-..." beside the target

# Every file ``load_model`` read in this process (model and external data, resolved):
# ``save_model`` and ``atomic_write`` never replace one of them unless ``force`` is set.
_LOADED_FILES: set[Path] = set()

# Ops whose weight input (index 1) must be a tensor of rank >= 3: [out, in/groups, *kernel].
_CONV_LIKE = {"Conv", "ConvTranspose", "ConvInteger", "DeformConv"}
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                onnx.TensorProto.DOUBLE}


@dataclass(frozen=True)
class LoadedModel:
    """A model and where it came from."""

    model: onnx.ModelProto
    path: Path
    used_external_data: bool
    external_files: tuple[Path, ...] = ()  # resolved external-data files that were read


def load_model(path: str | os.PathLike, check_weights: bool = True) -> LoadedModel:
    """Load an ONNX model from ``path`` with its external data, checked for safety.

    In order: the path (a readable regular file, size limits, not text), the protobuf, the
    external data (locations inside the model's folder, offsets inside the files), the graph
    structure (cycles, dangling inputs, duplicate outputs, initializer sizes, weight ranks),
    ``onnx.checker`` (without its shape-inference pass), and with ``check_weights`` NaN/Inf in
    floating-point weights. Every problem is a one-line ``OnnxPruneError`` (exit code 2).
    """
    path = Path(path)
    data = _read_model_file(path)
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise OnnxPruneError(f"{path}: not a valid ONNX model ({_short(exc)})") from None
    if not model.HasField("graph") or len(model.graph.node) == 0:
        raise OnnxPruneError(f"{path}: not a valid ONNX model (no graph nodes)")
    if model.ir_version <= 0:
        raise OnnxPruneError(f"{path}: not a valid ONNX model (no ir_version)")
    check_structure(model, str(path))
    external = _external_tensors(model)
    files: tuple[Path, ...] = ()
    if external:
        files = _load_external(model, path, external)  # every location checked first
        _run_checker(path, path)  # the checker reads the small .onnx file, not the weights
        for tensor in external:
            _check_tensor_data(tensor, str(path))
    else:
        _run_checker(data, path)
    if check_weights:
        check_finite_weights(model, str(path))
    _LOADED_FILES.add(path.resolve())
    _LOADED_FILES.update(files)
    return LoadedModel(model=model, path=path, used_external_data=bool(external),
                       external_files=files)


def _read_model_file(path: Path) -> bytes:
    """The bytes of a model file after path and size checks (never blocks on a FIFO)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        what = "dangling symbolic link" if path.is_symlink() else "no such file"
        raise OnnxPruneError(f"{path}: {what}") from None
    except OSError as exc:
        raise OnnxPruneError(f"{path}: cannot access ({exc.strerror or _short(exc)})") from None
    if stat.S_ISDIR(info.st_mode):
        raise OnnxPruneError(f"{path}: is a directory, not an ONNX file")
    if not stat.S_ISREG(info.st_mode):
        raise OnnxPruneError(f"{path}: not a regular file ({_file_kind(info.st_mode)})")
    if info.st_size == 0:
        raise OnnxPruneError(f"{path}: empty file (0 bytes), not an ONNX model")
    if info.st_size > MAX_PROTO_BYTES:
        raise OnnxPruneError(
            f"{path}: {info.st_size} bytes is over protobuf's 2 GB limit; store weights as external data"
        )
    data = _read_regular(path, 0, None, f"{path}")
    head = data[:256]
    if _looks_like_text(head):
        raise OnnxPruneError(f"{path}: a text file, not an ONNX model (ONNX files are binary protobuf)")
    return data


def _read_regular(path: Path, offset: int, length: int | None, what: str) -> bytes:
    """Read ``length`` bytes (all when None) at ``offset`` from a regular file, checked after open."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except PermissionError:
        raise OnnxPruneError(f"{what}: permission denied") from None
    except OSError as exc:
        raise OnnxPruneError(f"{what}: cannot open ({exc.strerror or _short(exc)})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # swapped after the check: refuse, never block
            raise OnnxPruneError(f"{what}: not a regular file ({_file_kind(info.st_mode)})")
        if length is None:
            length = info.st_size - offset
        os.lseek(fd, offset, os.SEEK_SET)
        chunks, left = [], length
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 26))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except PermissionError:
        raise OnnxPruneError(f"{what}: permission denied") from None
    except OSError as exc:
        raise OnnxPruneError(f"{what}: cannot read ({exc.strerror or _short(exc)})") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) != length:
        raise OnnxPruneError(f"{what}: file is shorter than expected ({len(data)} of {length} bytes)")
    return data


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a plain file"


def _looks_like_text(head: bytes) -> bool:
    """True when the first bytes are printable text: a binary ONNX file starts with 0x08."""
    if not head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\t\r\n\f" for ch in text)


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


# --- external data ------------------------------------------------------------------------------


def _external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    return [t for t in _get_all_tensors(model) if uses_external_data(t)]


def _load_external(model: onnx.ModelProto, path: Path,
                   tensors: list[onnx.TensorProto]) -> tuple[Path, ...]:
    """Read each external tensor's bytes, refusing locations outside the model's folder.

    Every location, offset and length is checked before any byte is read.
    """
    base = path.resolve().parent
    jobs = []
    total = 0
    for tensor in tensors:
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        target = _safe_location(base, location, tensor.name)
        size = target.stat().st_size
        offset = _int_field(info, "offset", 0, tensor.name)
        length = _int_field(info, "length", None, tensor.name)
        length = size - offset if length is None else length
        if offset < 0 or length < 0 or offset + length > size:
            raise OnnxPruneError(
                f"external data of tensor '{tensor.name}' lies outside '{location}' "
                f"(offset {offset}, length {length}, file {size} bytes)"
            )
        total += length
        if total > MAX_MODEL_BYTES:
            raise OnnxPruneError(f"{path}: external data over {MAX_MODEL_BYTES} bytes")
        jobs.append((tensor, target, offset, length, location))
    for tensor, target, offset, length, location in jobs:
        tensor.raw_data = _read_regular(target, offset, length,
                                        f"external data file '{location}' of tensor '{tensor.name}'")
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]
    return tuple(sorted({job[1] for job in jobs}))


def _int_field(info: dict, key: str, default, tensor_name: str):
    text = info.get(key)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise OnnxPruneError(
            f"external data of tensor '{tensor_name}' has a non-integer {key} '{text[:40]}'") from None


def _safe_location(base: Path, location: str, tensor_name: str) -> Path:
    where = f"external data location '{location}' of tensor '{tensor_name}'"
    if not location.strip():
        raise OnnxPruneError(f"external data of tensor '{tensor_name}' has an empty location")
    if "\x00" in location:
        raise OnnxPruneError(f"{where} contains a NUL byte; refused")
    if (os.path.isabs(location) or location.startswith(("/", "\\", "~"))
            or re.match(r"^[A-Za-z]:", location)):
        raise OnnxPruneError(f"{where} is an absolute path; refused")
    parts = re.split(r"[\\/]+", location)
    if ".." in parts:
        raise OnnxPruneError(f"{where} contains '..'; refused")
    if "\\" in location:
        raise OnnxPruneError(f"{where} contains a backslash; refused (use '/')")
    target = (base / location).resolve()
    if base not in target.parents:
        if target == base:
            raise OnnxPruneError(f"external data file '{location}' of tensor '{tensor_name}' "
                                 f"is a directory")
        raise OnnxPruneError(f"{where} resolves outside the model's folder (through a symbolic "
                             f"link); refused")
    try:
        info = target.stat()
    except FileNotFoundError:
        raise OnnxPruneError(
            f"external data file '{location}' of tensor '{tensor_name}' is missing") from None
    except OSError as exc:
        raise OnnxPruneError(f"external data file '{location}' of tensor '{tensor_name}': "
                             f"cannot access ({exc.strerror or _short(exc)})") from None
    if not stat.S_ISREG(info.st_mode):
        raise OnnxPruneError(f"external data file '{location}' of tensor '{tensor_name}' is "
                             f"{_file_kind(info.st_mode)}, not a regular file")
    return target


def save_model(
    model: onnx.ModelProto,
    path: str | os.PathLike,
    external_data: bool | None = None,
    force: bool = False,
    protect: tuple[str | os.PathLike, ...] = (),
) -> Path:
    """Write ``model`` to ``path`` atomically; weights go to ``<name>.data`` when asked or > 2 GB.

    Everything is first written into a temporary folder beside ``path`` (same file system),
    flushed to disk, then renamed into place; on any failure (or Ctrl-C) the temporary folder
    is removed and nothing is left behind. ``protect`` lists input files that must never be
    overwritten unless ``force`` is set; every file ``load_model`` read in this process (the
    models and their external data) is protected the same way.
    """
    path = Path(path)
    if path.is_dir():
        raise OnnxPruneError(f"{path}: output path is a directory")
    folder = path.resolve().parent
    if not folder.is_dir():
        raise OnnxPruneError(f"{path.parent}: output folder does not exist")
    if external_data is None:
        external_data = model.ByteSize() > MAX_PROTO_BYTES
    data_name = path.name + ".data"
    targets = [folder / path.name] + ([folder / data_name] if external_data else [])
    if not force:
        _refuse_overwrite(targets, protect)
    _sweep_stale_temps(folder)
    with tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=folder) as tmp:
        tmp_model = Path(tmp) / path.name
        try:
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
        except OSError as exc:
            raise OnnxPruneError(f"{path}: cannot write ({exc.strerror or _short(exc)})") from None
        except ValueError as exc:  # e.g. over 2 GB without external data
            raise OnnxPruneError(f"{path}: cannot save the model ({_short(exc)})") from None
        written = [tmp_model] + ([Path(tmp) / data_name] if external_data else [])
        for file in written:
            if file.exists():
                _fsync(file)
        # data first: a model file never points at data that is not there yet
        if external_data and (Path(tmp) / data_name).exists():
            os.replace(Path(tmp) / data_name, folder / data_name)
        os.replace(tmp_model, folder / path.name)
    _fsync_dir(folder)
    return path


def _refuse_overwrite(targets: list[Path], protect) -> None:
    guarded = {Path(p).resolve() for p in protect if Path(p).exists()} | _LOADED_FILES
    for target in targets:
        resolved = target.resolve()
        if resolved in guarded:
            what = "an external data file of an input model" if resolved.suffix == ".data" \
                else "an input file"
            raise OnnxPruneError(f"{target}: refusing to overwrite {what} (use --force)")


def _sweep_stale_temps(folder: Path) -> None:
    """Remove temporary outputs left in ``folder`` by a killed onnxprune process (SIGKILL)."""
    try:
        entries = list(folder.glob(TEMP_PREFIX + "*"))
    except OSError:
        return
    for entry in entries:
        pid_text = entry.name[len(TEMP_PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or _alive(int(pid_text)):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", force: bool = False):
    """Open a temporary file beside ``path``; it replaces ``path`` only if the block succeeds.

    Never replaces a file ``load_model`` read in this process unless ``force`` is set.
    """
    path = Path(path)
    if path.is_dir():
        raise OnnxPruneError(f"{path}: output path is a directory")
    folder = path.resolve().parent
    if not folder.is_dir():
        raise OnnxPruneError(f"{path.parent}: output folder does not exist")
    if not force:
        _refuse_overwrite([folder / path.name], ())
    _sweep_stale_temps(folder)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-{path.name}.", dir=folder)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            with contextlib.suppress(OSError):
                os.fsync(handle.fileno())
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
