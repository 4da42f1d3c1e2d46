"""Lazy samples: an array-like view of a data source, decoded on access. numpy and Pillow only.

``LazyArray`` is what ``Dataset.x`` holds: it has ``len()``, ``.shape``, ``.dtype`` (float32) and
``.ndim`` like an array, and indexing it by an int, a slice, an int or bool array (optionally
followed by more indices, ``x[:, 0]``) decodes just those samples into a float32 numpy array.
``subset`` gives a view of some of its samples (an index list, no copy). ``np.asarray(x)``
decodes everything: it exists for small data and tests, never on the pipeline's path.

Sources (each picklable, for ``DataLoader`` workers):

- ``ArraySource``: an array in memory (synthetic inputs, a decoded subset of a compressed .npz);
- ``MemmapSource``: a raw array payload at an offset in a file, memory-mapped per process (the
  member of an uncompressed ``.npz``, a spilled temporary file);
- ``ImageSource``: image files, decoded and preprocessed per access (``onnxprune.preprocess``);
- ``NoiseSource``: standard Gaussian samples drawn per access (data-free inputs, never stored).

``iter_batches`` streams consecutive batches, decoded by ``workers`` threads ahead of use.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence

import numpy as np

from onnxprune.errors import OnnxPruneError
from onnxprune.preprocess import Preprocessing, decode_image

CHUNK_BYTES = 16 << 20  # np.asarray and scans: decode this much at a time


class ArraySource:
    """Samples held in memory (already model inputs, any numeric dtype)."""

    def __init__(self, array: np.ndarray, where: str = "<array>"):
        self.array, self.where = array, where
        self.sample_shape = tuple(int(d) for d in array.shape[1:])

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def read(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.array[rows], dtype=np.float32)


class MemmapSource:
    """A raw C- or Fortran-order array at ``offset`` in the file ``path``, mapped on first use."""

    def __init__(self, path: str, offset: int, dtype: np.dtype, shape: tuple[int, ...],
                 fortran: bool = False, where: str | None = None):
        self.path, self.offset, self.dtype = str(path), int(offset), np.dtype(dtype)
        self.shape, self.fortran, self.where = tuple(shape), fortran, where or str(path)
        self.sample_shape = self.shape[1:]
        self._map = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_map": None}  # each process maps the file itself

    def mapped(self) -> np.ndarray:
        if self._map is None:
            try:
                self._map = np.memmap(self.path, mode="r", dtype=self.dtype, shape=self.shape,
                                      offset=self.offset, order="F" if self.fortran else "C")
            except (OSError, ValueError) as exc:
                raise OnnxPruneError(f"{self.where}: cannot map the array data "
                                     f"({short(exc)})") from None
        return self._map

    def read(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.mapped()[rows], dtype=np.float32)


class ImageSource:
    """Image files decoded on access into model inputs of ``sample_shape``."""

    def __init__(self, files: Sequence[str], prep: Preprocessing, layout: str, channels: int,
                 size: tuple[int, int], where: str):
        self.files, self.prep, self.layout = list(files), prep, layout
        self.channels, self.size, self.where = channels, tuple(size), where
        h, w = self.size
        self.sample_shape = (channels, h, w) if layout == "nchw" else (h, w, channels)

    def __len__(self) -> int:
        return len(self.files)

    def read(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), *self.sample_shape), dtype=np.float32)
        for i, row in enumerate(rows):
            out[i] = decode_image(self.files[int(row)], self.prep, self.layout, self.channels,
                                  self.size)
        return out


class NoiseSource:
    """``count`` samples of N(0, 1) noise of ``sample_shape``; sample i comes from its own
    generator seeded (``seed``, i), so any subset or order reads the same values."""

    def __init__(self, count: int, sample_shape: tuple[int, ...], seed: int = 0,
                 where: str = "gaussian noise"):
        self.count, self.seed, self.where = int(count), int(seed), where
        self.sample_shape = tuple(int(d) for d in sample_shape)

    def __len__(self) -> int:
        return self.count

    def read(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), *self.sample_shape), dtype=np.float32)
        for k, row in enumerate(np.asarray(rows, dtype=np.int64)):
            out[k] = np.random.default_rng((self.seed, int(row))).standard_normal(
                self.sample_shape, dtype=np.float32)
        return out


class LazyArray:
    """Samples ``rows`` of ``source``, decoded (float32) when indexed; see the module docstring."""

    dtype = np.dtype(np.float32)

    def __init__(self, source, rows: np.ndarray | None = None):
        self.source = source
        self.rows = (np.arange(len(source), dtype=np.int64) if rows is None
                     else np.asarray(rows, dtype=np.int64))

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.source.sample_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.source.sample_shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def where(self) -> str:
        return self.source.where

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"LazyArray({type(self.source).__name__} {self.where}, shape={self.shape})"

    def _select(self, key) -> np.ndarray:
        """The source rows that ``key`` (first axis) picks."""
        if isinstance(key, slice):
            return self.rows[key]
        key = np.asarray(key)
        if key.dtype == np.bool_:
            if key.shape != (len(self.rows),):
                raise IndexError(f"boolean index of shape {key.shape} for {len(self.rows)} samples")
            return self.rows[key]
        if not np.issubdtype(key.dtype, np.integer):
            raise IndexError(f"samples are indexed by ints, slices or int/bool arrays, got {key.dtype}")
        return self.rows[key]

    def __getitem__(self, key) -> np.ndarray:
        rest = ()
        if isinstance(key, tuple):
            key, rest = (key[0], key[1:]) if key else (slice(None), ())
        if key is Ellipsis:
            key, rest = slice(None), (Ellipsis, *rest)
        if isinstance(key, (int, np.integer)):
            index = int(key)
            if not -len(self.rows) <= index < len(self.rows):
                raise IndexError(f"sample {index} is out of range for {len(self.rows)} samples")
            out = self.source.read(self.rows[index:index + 1] if index >= 0
                                   else self.rows[[index]])[0]
            return out[rest] if rest else out
        rows = self._select(key)
        out = self.source.read(rows) if len(rows) else np.empty((0, *self.shape[1:]), np.float32)
        return out[(slice(None), *rest)] if rest else out

    def subset(self, indices) -> LazyArray:
        """A view of the samples at ``indices`` (an index list into this view, no decoding)."""
        return LazyArray(self.source, self._select(indices))

    def __array__(self, dtype=None, copy=None):
        out = np.empty(self.shape, dtype=np.float32)
        for start, batch in iter_batches(self, chunk_rows(self)):
            out[start:start + len(batch)] = batch
        return out if dtype is None else out.astype(dtype, copy=False)


def chunk_rows(x) -> int:
    """Rows of ``x`` in about ``CHUNK_BYTES`` of float32."""
    per_row = 4 * max(1, math.prod(x.shape[1:]))
    return max(1, CHUNK_BYTES // per_row)


def as_lazy(x, where: str = "<array>") -> LazyArray:
    return x if isinstance(x, LazyArray) else LazyArray(ArraySource(np.asarray(x), where))


def subset(x, indices):
    """``x``'s samples at ``indices``: a view for a LazyArray, a copy for a plain array."""
    return x.subset(indices) if isinstance(x, LazyArray) else x[np.asarray(indices)]


def iter_batches(x, batch_size: int, workers: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """(start, decoded batch) over ``x`` in order; ``workers`` threads decode up to
    ``workers + 1`` batches ahead (Pillow and numpy release the GIL while they work)."""
    starts = range(0, len(x), max(1, int(batch_size)))
    if workers <= 0 or len(starts) < 2:
        for start in starts:
            yield start, x[start:start + batch_size]
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="onnxprune-decode") as pool:
        pending: deque = deque()
        todo = iter(starts)
        try:
            for start in todo:
                pending.append((start, pool.submit(x.__getitem__, slice(start, start + batch_size))))
                if len(pending) > workers:
                    first, future = pending.popleft()
                    yield first, future.result()
            while pending:
                first, future = pending.popleft()
                yield first, future.result()
        finally:
            for _, future in pending:
                future.cancel()


def count_nonfinite(x) -> int:
    """NaN and Inf values in ``x``, scanned in chunks (bounded memory)."""
    if isinstance(x, np.ndarray):
        return int(x.size - np.count_nonzero(np.isfinite(x)))
    bad = 0
    for _, batch in iter_batches(x, chunk_rows(x)):
        bad += int(batch.size - np.count_nonzero(np.isfinite(batch)))
    return bad


def short(exc: BaseException) -> str:
    return (" ".join(str(exc).split()) or type(exc).__name__)[:200]


def remove_file(path: str, owner: int) -> None:
    """Delete a spilled temporary file, from the process that made it only."""
    if os.getpid() == owner:
        try:
            os.unlink(path)
        except OSError:
            pass
