"""Training batches through ``torch.utils.data``: samples decoded in ``DataLoader`` workers.

The samples are any array-like ``x`` (a ``LazyArray`` of ``onnxprune.lazydata``, or a numpy
array) and optional labels ``y``. The order of the samples is fixed in the main process before
any worker starts (a seeded permutation, or a ``DistributedSampler``), and the loader returns
the batches in that order, so the batches are the same for any number of workers; workers only
decode. A sample that fails to decode is passed back from the worker as a message and raised
here as the one-line ``OnnxPruneError`` naming the file (exit 2), not as a worker traceback.

torch is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from onnxprune.errors import OnnxPruneError


class Failed:
    """A decoding error, carried out of a worker process as data."""

    def __init__(self, message: str):
        self.message = message


class BatchSet:
    """Map-style dataset whose index is a whole batch: an int array of sample indices."""

    def __init__(self, x, y: np.ndarray | None = None):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, indices):
        indices = np.asarray(indices, dtype=np.int64)
        try:
            xb = np.ascontiguousarray(self.x[indices], dtype=np.float32)
        except OnnxPruneError as exc:
            return Failed(exc.message)
        return (xb,) if self.y is None else (xb, np.asarray(self.y[indices], dtype=np.int64))


class SampleSet:
    """Map-style dataset of single samples, ``(x[i],)`` or ``(x[i], y[i])`` (as torch's
    ``TensorDataset`` gives them), for per-sample samplers such as ``DistributedSampler``."""

    def __init__(self, x, y: np.ndarray | None = None):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int):
        try:
            xi = np.ascontiguousarray(self.x[int(index)], dtype=np.float32)
        except OnnxPruneError as exc:
            return Failed(exc.message)
        return (xi,) if self.y is None else (xi, np.int64(self.y[int(index)]))


def convert_batch(item):
    """A ``BatchSet`` item as tensors (a ``Failed`` passes through)."""
    import torch

    if isinstance(item, Failed):
        return item
    return tuple(torch.from_numpy(part) for part in item)


def collate_samples(items):
    """``SampleSet`` items stacked into tensors (the first ``Failed`` passes through)."""
    import torch

    for item in items:
        if isinstance(item, Failed):
            return item
    return tuple(torch.from_numpy(np.stack([item[k] for item in items]))
                 for k in range(len(items[0])))


class Batches:
    """Batch ``k`` is ``order[k * size:(k + 1) * size]``, for ``k`` in ``start .. stop - 1``."""

    def __init__(self, order: np.ndarray, size: int, start: int, stop: int):
        self.order, self.size, self.start, self.stop = order, size, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[np.ndarray]:
        for k in range(self.start, self.stop):
            yield self.order[k * self.size:(k + 1) * self.size]


def epoch_order(count: int, batch_size: int, iterations: int, seed: int) -> np.ndarray:
    """Sample indices for ``iterations`` batches: seeded permutations of ``count`` samples,
    one after another."""
    rng = np.random.default_rng(seed)
    epochs = math.ceil(batch_size * iterations / max(count, 1)) + 1
    return np.concatenate([rng.permutation(count) for _ in range(epochs)])


class Checked:
    """A ``DataLoader`` whose ``Failed`` items are raised as ``OnnxPruneError``."""

    def __init__(self, loader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for item in self.loader:
            if isinstance(item, Failed):
                raise OnnxPruneError(item.message)
            yield item


def _worker_options(workers: int, seed: int, pin: bool) -> dict:
    import torch

    options = {"num_workers": int(workers), "pin_memory": pin,
               # a private generator: the loader never draws from the global torch RNG
               "generator": torch.Generator().manual_seed(int(seed))}
    if workers > 0:
        options["prefetch_factor"] = 2
    return options


def batch_loader(x, y, batches: Sequence[np.ndarray] | Batches, workers: int = 0,
                 seed: int = 0, pin_memory: bool = False) -> Checked:
    """Tensors ``(x,)`` or ``(x, y)`` for each index array of ``batches``, in that order."""
    from torch.utils.data import DataLoader

    loader = DataLoader(BatchSet(x, y), batch_size=None, sampler=batches,
                        collate_fn=convert_batch, **_worker_options(workers, seed, pin_memory))
    return Checked(loader)


def sample_loader(x, y, batch_size: int, sampler, workers: int = 0, seed: int = 0,
                  pin_memory: bool = False) -> Checked:
    """Like ``DataLoader(TensorDataset(x, y), batch_size, sampler=sampler, drop_last=True)``,
    with the samples decoded on access (in ``workers`` processes)."""
    from torch.utils.data import DataLoader

    loader = DataLoader(SampleSet(x, y), batch_size=batch_size, sampler=sampler, drop_last=True,
                        collate_fn=collate_samples, **_worker_options(workers, seed, pin_memory))
    return Checked(loader)
