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
from onnxprune.graph_checks import (  # noqa: F401  (re-exported)
    _check_tensor_data,
    _run_checker,
    check_finite_weights,
    check_structure,
)

MAX_PROTO_BYTES = 2**31 - 1  # protobuf's own limit for one message
MAX_MODEL_BYTES = 64 * 2**30  # refuse anything bigger than this in all (weights included)
TEMP_PREFIX = ".onnxprune-tmp-"  # temporary outputs: f"{TEMP_PREFIX}{pid}-..." beside the target

# Every file ``load_model`` read in this process (model and external data, resolved):
# ``save_model`` and ``atomic_write`` never replace one of them unless ``force`` is set.
_LOADED_FILES: set[Path] = set()



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
    if _list_ir3_initializers(model):
        data = model.SerializeToString()
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


def _list_ir3_initializers(model: onnx.ModelProto) -> bool:
    """IR 3 lists every initializer among the graph inputs; exporters that did not are accepted
    by adding the missing inputs (in place; the normative IR-3 form). True when any was added."""
    if model.ir_version >= 4:
        return False
    listed = {i.name for i in model.graph.input}
    missing = [t for t in model.graph.initializer if t.name not in listed]
    for tensor in missing:
        model.graph.input.append(onnx.helper.make_tensor_value_info(
            tensor.name, tensor.data_type, list(tensor.dims)))
    return bool(missing)


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
                _usual_permissions(file)
        # data first: a model file never points at data that is not there yet
        if external_data and (Path(tmp) / data_name).exists():
            os.replace(Path(tmp) / data_name, folder / data_name)
        os.replace(tmp_model, folder / path.name)
    _fsync(folder)
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
    """Flush a file's or a folder's contents to disk (best effort)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _usual_permissions(path: Path) -> None:
    """Give an output the mode a plain ``open`` would (temporary files start private)."""
    mask = os.umask(0)
    os.umask(mask)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o666 & ~mask)


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
        _usual_permissions(Path(tmp))
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
