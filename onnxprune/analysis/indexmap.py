"""Index maps: how positions on a channel axis move through Concat, Split and Flatten.

Each map turns per-position atom ids forward (inputs -> output) and answers the reverse
question (which input position an output position comes from).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ConcatMap:
    """Output = inputs laid end to end; ``sizes`` per input."""

    sizes: tuple[int, ...]

    def forward(self, parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts)

    def reverse(self, position: int) -> tuple[int, int]:
        for index, size in enumerate(self.sizes):
            if position < size:
                return index, position
            position -= size
        raise IndexError(position)


@dataclass(frozen=True)
class SplitMap:
    """Outputs = consecutive slices of the input, ``sizes`` each."""

    sizes: tuple[int, ...]

    def forward(self, ids: np.ndarray) -> list[np.ndarray]:
        bounds = np.cumsum((0, *self.sizes))
        return [ids[bounds[i]:bounds[i + 1]] for i in range(len(self.sizes))]

    def reverse(self, output: int, position: int) -> int:
        return int(sum(self.sizes[:output])) + position

    @staticmethod
    def kept_sizes(parts: list[np.ndarray], kept) -> list[int]:
        """Sizes of the slices after pruning, given ``kept(ids) -> bool mask``."""
        return [int(kept(p).sum()) for p in parts]


@dataclass(frozen=True)
class FlattenMap:
    """Dims (outer, channels, inner) merged into one axis in C order."""

    outer: int
    channels: int
    inner: int

    def forward(self, ids: np.ndarray) -> np.ndarray:
        return np.broadcast_to(ids[None, :, None], (self.outer, self.channels, self.inner)).reshape(-1)

    def reverse(self, position: int) -> int:
        return (position // self.inner) % self.channels
