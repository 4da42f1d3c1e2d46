"""``--memory-budget``: sizes with a suffix, the default budget, and how it is shared.

No torch here, so that the CLI can parse and check the option before anything heavy loads.

What the budget bounds (both on the torch device):

* recalibration: the activations its sweeps keep cached between layers (``RECALIBRATION_CACHE``
  of the budget; past it they are written to a temporary folder and read back) and the working
  arrays of a least-squares fit (the rest: im2col columns and targets, built in chunks of
  calibration samples that fit it);
* data-free synthesis: the activations autograd keeps for one optimisation step (the batch is
  made smaller until they fit).

Not covered: the model's weights, the two compiled graphs, one calibration batch of one layer's
output while it is computed, and the inputs themselves (the calibration or synthetic set).
"""

from __future__ import annotations

import os
import re

from onnxprune.errors import OnnxPruneError

DEFAULT_CAP = 1 << 30  # the default budget is at most 1 GiB ...
DEFAULT_SHARE = 8  # ... and at most 1/8 of the machine's (or the cgroup's) memory
RECALIBRATION_CACHE = 0.75  # share of the budget for cached activations; the rest for a fit
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """``"2G"``, ``"512M"``, ``"1.5GiB"``, ``"300k"``, ``"1000000"`` → bytes.

    Suffixes are powers of 1024 (K, M, G, T; an optional ``B`` or ``iB`` after them); no
    suffix means bytes. Anything else is a one-line :class:`OnnxPruneError` (exit 2).
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise OnnxPruneError(f"--memory-budget must not be negative, got {text}")
        return text
    match = _SIZE.fullmatch(str(text).strip())
    if match is None:
        raise OnnxPruneError(f"--memory-budget must be a size such as 512M, 2G or 1000000 "
                             f"(bytes; K/M/G/T are powers of 1024), got '{text}'")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def format_size(size: int) -> str:
    """Bytes as the largest whole-ish unit: 1073741824 → '1.0 GiB'."""
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} B"


def physical_memory() -> int | None:
    """The memory this process may use: the machine's RAM, or a smaller cgroup limit."""
    sizes = []
    try:
        sizes.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, encoding="ascii") as handle:
                value = handle.read().strip()
        except OSError:
            continue
        if value.isdigit() and int(value) < (1 << 60):
            sizes.append(int(value))
    return min(sizes) if sizes else None


def default_memory_budget() -> int:
    """1/8 of :func:`physical_memory`, at most 1 GiB (1 GiB when it cannot be read)."""
    memory = physical_memory()
    return DEFAULT_CAP if not memory else min(DEFAULT_CAP, memory // DEFAULT_SHARE)


def resolve_budget(budget: str | int | None) -> int:
    """``None`` → the default; otherwise :func:`parse_size`."""
    return default_memory_budget() if budget is None else parse_size(budget)
