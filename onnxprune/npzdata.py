"""``.npz`` data read lazily: ``x`` is never loaded whole. numpy only.

``np.load(mmap_mode=...)`` ignores the memory map for ``.npz`` archives, so the archive is read
here member by member:

- an uncompressed (ZIP_STORED) ``x.npy`` is memory-mapped where its payload lies in the zip file
  (after the member's local file header and the ``.npy`` header, both parsed here and with
  ``np.lib.format``); indexing reads only the rows asked for;
- a compressed (deflated, ...) ``x.npy`` is streamed in chunks once, keeping only the selected
  rows (``--fraction`` / ``--limit``): in memory up to ``IN_MEMORY_BYTES`` of float32, past that
  in a temporary file that is memory-mapped (deleted when no longer used); the stream stops after
  the last selected row;
- ``y`` (labels, one integer a sample) is small and read whole.

Headers are checked before any data is read: dtype (numbers only; object arrays, i.e. pickles,
are refused), shape and sample count; every problem is a one-line ``OnnxPruneError`` (exit 2).
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
import weakref
import zipfile
from pathlib import Path

import numpy as np

from onnxprune.errors import OnnxPruneError
from onnxprune.lazydata import ArraySource, LazyArray, MemmapSource, remove_file, short

IN_MEMORY_BYTES = 256 << 20  # a compressed x's selected rows (float32) kept in memory up to this
STREAM_BYTES = 8 << 20  # decompressed bytes read at a time from a compressed member
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # zip local file header (30 bytes)


def member_names(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Array name (as ``np.load`` names it: '.npy' dropped) -> its zip member."""
    out = {}
    for info in archive.infolist():
        name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        out.setdefault(name, info)
    return out


def read_header(handle) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) from a ``.npy`` stream positioned at its start."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(handle)
    raise ValueError(f"unsupported .npy format version {version}")


def open_npz(path: Path, rows_of) -> tuple[LazyArray, np.ndarray | None]:
    """(lazy x, y or None); ``rows_of(count)`` gives the sorted sample indices to keep."""
    if not zipfile.is_zipfile(path):
        raise OnnxPruneError(f"{path}: not a readable .npz file (not a zip archive of arrays)")
    try:
        with zipfile.ZipFile(path) as archive:
            members = member_names(archive)
            if "x" not in members:
                raise OnnxPruneError(f"{path}: no array 'x' in the .npz (found: "
                                     f"{', '.join(members) or 'nothing'})")
            info = members["x"]
            with archive.open(info) as handle:
                shape, fortran, dtype = read_header(handle)
                header_bytes = handle.tell() if handle.seekable() else None
            _check_x(path, shape, dtype)
            y = _read_labels(archive, members["y"], path) if "y" in members else None
            if y is not None and len(y) != shape[0]:
                raise OnnxPruneError(f"{path}: 'y' has {len(y)} labels but 'x' has {shape[0]} "
                                     f"samples")
            keep = np.asarray(rows_of(shape[0]), dtype=np.int64)
            stored = info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 1
            if stored and header_bytes is not None:
                x = _mapped(path, info, header_bytes, shape, fortran, dtype).subset(keep)
            else:
                x = _streamed(path, archive, info, shape, fortran, dtype, keep)
    except OnnxPruneError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise OnnxPruneError(f"{path}: contains object (pickled) arrays; refused") from None
        raise OnnxPruneError(f"{path}: not a readable .npz file ({short(exc)})") from None
    except Exception as exc:  # zipfile.BadZipFile, OSError, zlib.error, EOFError, ...
        raise OnnxPruneError(f"{path}: not a readable .npz file ({short(exc)})") from None
    return x, None if y is None else y[keep]


def _check_x(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
    if dtype.hasobject:
        raise OnnxPruneError(f"{path}: contains object (pickled) arrays; refused")
    if len(shape) == 0 or shape[0] == 0:
        raise OnnxPruneError(f"{path}: array 'x' is empty")
    if dtype.names is not None or not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise OnnxPruneError(f"{path}: array 'x' has dtype {dtype}; expected numbers")


def _read_labels(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> np.ndarray:
    with archive.open(info) as handle:
        y = np.lib.format.read_array(handle, allow_pickle=False)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise OnnxPruneError(f"{path}: labels 'y' must be a 1-D array of class indices, got "
                             f"shape {y.shape}")
    if np.issubdtype(y.dtype, np.integer):
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        return y.astype(np.int64)
    raise OnnxPruneError(f"{path}: labels 'y' must be integers, got dtype {y.dtype}")


def _mapped(path: Path, info: zipfile.ZipInfo, header_bytes: int, shape, fortran,
            dtype) -> LazyArray:
    """The stored member's payload, memory-mapped at its offset in the zip file."""
    with open(path, "rb") as raw:
        raw.seek(info.header_offset)
        fields = _LOCAL_HEADER.unpack(raw.read(_LOCAL_HEADER.size))
    if fields[0] != b"PK\x03\x04":
        raise OnnxPruneError(f"{path}: not a readable .npz file (bad local header of "
                             f"{info.filename})")
    start = info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]
    payload = math.prod(shape) * dtype.itemsize
    if header_bytes + payload > info.file_size or start + info.file_size > os.path.getsize(path):
        raise OnnxPruneError(f"{path}: not a readable .npz file ({info.filename} is truncated)")
    return LazyArray(MemmapSource(str(path), start + header_bytes, dtype, shape, fortran,
                                  where=str(path)))


def _read_exact(handle, count: int) -> bytes:
    data = handle.read(count)
    if len(data) != count:
        raise EOFError("the member ends before its declared size")
    return data


def _streamed(path, archive, info, shape, fortran, dtype, keep: np.ndarray) -> LazyArray:
    """A compressed member: its selected rows, decoded in one pass over the stream."""
    sample = tuple(shape[1:])
    if fortran:  # rows are not contiguous in the stream: spill the payload, map it
        return _spill_payload(path, archive, info, shape, dtype).subset(keep)
    row_bytes = max(1, math.prod(sample) * dtype.itemsize)
    out, source = _output(path, (len(keep), *sample))
    per_chunk = max(1, STREAM_BYTES // row_bytes)
    with archive.open(info) as handle:
        read_header(handle)
        done = 0
        for start in range(0, shape[0], per_chunk):
            if done == len(keep):
                break  # the rest of the member is never decompressed
            count = min(per_chunk, shape[0] - start)
            stop = int(np.searchsorted(keep, start + count))
            if stop == done:  # no selected row here: skip the bytes
                _skip(handle, count * row_bytes)
                continue
            rows = np.frombuffer(_read_exact(handle, count * row_bytes),
                                 dtype=dtype).reshape(count, *sample)
            out[done:stop] = rows[keep[done:stop] - start]
            done = stop
    if isinstance(out, np.memmap):
        out.flush()
    return LazyArray(source)


def _skip(handle, count: int) -> None:
    while count > 0:
        count -= len(_read_exact(handle, min(count, STREAM_BYTES)))


def _output(path, shape: tuple[int, ...]):
    """(array to fill, its source): in memory when small, else a temporary memory-mapped file."""
    if math.prod(shape) * 4 <= IN_MEMORY_BYTES:
        out = np.empty(shape, dtype=np.float32)
        return out, ArraySource(out, where=str(path))
    name = _temp_file()
    out = np.memmap(name, mode="w+", dtype=np.float32, shape=shape)
    source = MemmapSource(name, 0, np.float32, shape, where=str(path))
    weakref.finalize(source, remove_file, name, os.getpid())
    return out, source


def _spill_payload(path, archive, info, shape, dtype) -> LazyArray:
    name = _temp_file()
    with archive.open(info) as handle, open(name, "wb") as out:
        read_header(handle)
        left = math.prod(shape) * dtype.itemsize
        while left > 0:
            chunk = _read_exact(handle, min(left, STREAM_BYTES))
            out.write(chunk)
            left -= len(chunk)
    source = MemmapSource(name, 0, dtype, shape, fortran=True, where=str(path))
    weakref.finalize(source, remove_file, name, os.getpid())
    return LazyArray(source)


def _temp_file() -> str:
    handle, name = tempfile.mkstemp(prefix="onnxprune-data-", suffix=".bin")
    os.close(handle)
    return name


def npz_sample_shape(path) -> tuple[int, ...] | None:
    """The shape of one sample of ``x`` in a ``.npz`` (read from the array header, no data), or
    None when it is not a readable ``x``."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = member_names(archive).get("x")
            if info is None:
                return None
            with archive.open(info) as handle:
                shape = read_header(handle)[0]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    return tuple(int(d) for d in shape[1:]) if len(shape) > 1 else None
