"""Selection: per-channel scores -> the kept channels that hit a MAC target exactly.

One global threshold over all prunable channels (found by bisection on the score order),
then a deterministic fill in score order with whatever still fits under the target. Every
group keeps at least one channel (``round_to`` channels, with ``--round-to``). MACs use the
analysis' MAC terms: the one formula ``analyze`` uses, so the result is what the pruned
graph will report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from onnxprune.analysis.groups import ChannelAnalysis
from onnxprune.errors import OnnxPruneError


class MacCounter:
    """Evaluates the MAC terms for a keep mask quickly, also incrementally."""

    def __init__(self, analysis: ChannelAnalysis):
        n_terms, n_channels = len(analysis.mac_terms), analysis.total_channels
        self.coeff = np.array([t.expr.coeff for t in analysis.mac_terms], dtype=np.float64)
        self.reduce = np.zeros((n_terms, n_channels))
        self.out = np.zeros((n_terms, n_channels))
        self.fixed_reduce = np.zeros(n_terms)
        self.fixed_out = np.zeros(n_terms)
        for i, term in enumerate(analysis.mac_terms):
            for side, fixed, matrix, fixed_row in (
                (term.reduce, term.fixed_reduce, self.reduce, self.fixed_reduce),
                (term.out, term.fixed_out, self.out, self.fixed_out),
            ):
                if side is None:
                    fixed_row[i] = fixed
                else:
                    np.add.at(matrix[i], side[side >= 0], 1.0)
                    fixed_row[i] = float((side < 0).sum())

    def counts(self, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = keep.astype(np.float64)
        return self.reduce @ k + self.fixed_reduce, self.out @ k + self.fixed_out

    def macs(self, keep: np.ndarray) -> float:
        reduce, out = self.counts(keep)
        return float(self.coeff @ (reduce * out))


@dataclass(frozen=True)
class Selection:
    """The kept channels (bool over global channels) and what they cost."""

    keep: np.ndarray
    macs: int
    macs_before: int
    target_macs: int
    threshold: float

    def plan(self, analysis: ChannelAnalysis) -> dict[str, list[int]]:
        """``{group id: kept indices}`` for every prunable group that loses channels."""
        plan = {}
        for g in analysis.groups:
            kept = np.flatnonzero(self.keep[g.offset:g.offset + g.channels])
            if len(kept) < g.channels:
                plan[g.id] = kept.tolist()
        return plan


class Unit(NamedTuple):
    """Channels kept or dropped together (``round_to`` of one group), in the group's order."""

    score: float
    key: tuple[int, int]
    chunk: np.ndarray
    prev: np.ndarray | None  # the group's previous unit: it must be kept first
    next: np.ndarray | None

    def can_add(self, keep: np.ndarray) -> bool:
        return self.prev is None or bool(keep[self.prev].all())

    def can_remove(self, keep: np.ndarray) -> bool:
        return self.next is None or not keep[self.next].any()


def _units(analysis: ChannelAnalysis, scores: np.ndarray, round_to: int | Mapping[str, int]):
    """Per prunable group: channels sorted by score (desc, index asc) in chunks of the group's
    multiple (``round_to``, or ``round_to[group id]``, 1 for groups it does not name)."""
    mandatory, optional = [], []
    for g in analysis.groups:
        if not g.prunable:
            continue
        local = scores[g.offset:g.offset + g.channels]
        order = g.offset + np.lexsort((np.arange(g.channels), -local))
        multiple = round_to.get(g.id, 1) if isinstance(round_to, Mapping) else round_to
        size = min(max(multiple, 1), g.channels)
        chunks = [order[i:i + size] for i in range(0, g.channels, size)]
        if size > 1 and len(chunks[-1]) < size and len(chunks) > 1:
            chunks[-2] = np.concatenate(chunks[-2:])  # a short tail rides with the last block
            chunks.pop()
        mandatory.append(chunks[0])
        if size == 1:  # any subset is valid: no order between units
            optional.extend(Unit(float(scores[c[0]]), (g.offset, i), c, None, None)
                            for i, c in enumerate(chunks[1:], start=1))
            continue
        for i in range(1, len(chunks)):
            following = chunks[i + 1] if i + 1 < len(chunks) else None
            prev = chunks[i - 1] if i > 1 else None
            optional.append(Unit(float(scores[chunks[i]].mean()), (g.offset, i), chunks[i], prev,
                                 following))
    optional.sort(key=lambda u: (-u.score, u.key))
    return mandatory, optional


def select(analysis: ChannelAnalysis, scores: np.ndarray, target: float,
           round_to: int | Mapping[str, int] = 1) -> Selection:
    """Keep the best-scored channels so that MACs <= ``target`` x original, as close as possible."""
    if not 0.0 < target <= 1.0:
        raise OnnxPruneError(f"--target must be in (0, 1], got {target}")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (analysis.total_channels,) or not np.isfinite(scores).all():
        raise OnnxPruneError("scores must be one finite number per channel")
    counter = MacCounter(analysis)
    keep = ~analysis.prunable_mask()
    before = counter.macs(np.ones_like(keep))
    budget = target * before
    mandatory, optional = _units(analysis, scores, round_to)
    for chunk in mandatory:
        keep[chunk] = True
    optional = _keep_every_tensor_alive(analysis, scores, keep, optional)
    floor = counter.macs(keep)
    if floor > budget + 1e-6:
        raise OnnxPruneError(
            f"target {target} is below what the model can reach: keeping one channel per group "
            f"(or --round-to) already costs {floor / before:.4f} of the MACs")
    k = _bisect_prefix(counter, keep, optional, budget)
    for unit in optional[:k]:
        keep[unit.chunk] = True
    threshold = optional[k - 1].score if k else float("inf")
    _fill(counter, keep, optional[k:], budget)
    _swap_towards_target(counter, keep, optional, budget)
    macs = counter.macs(keep)
    return Selection(keep, int(round(macs)), int(round(before)), int(budget), threshold)


FAST_MULTIPLE = {"cpu": 8, "cuda": 8}  # channel block of ORT's NCHWc CPU convs; tensor cores
AUTO_MIN_BLOCKS = 2  # a group gets the multiple when it holds at least this many blocks


def auto_round_to(analysis: ChannelAnalysis, provider: str) -> dict[str, int]:
    """``--round-to auto``: the multiple the provider's fast kernels need, for every prunable
    group that is a whole number of such blocks wide (it ran in the fast layout before pruning)
    and at least ``AUTO_MIN_BLOCKS`` blocks wide (pruning can still remove one); 1 elsewhere."""
    multiple = FAST_MULTIPLE["cuda" if provider == "cuda" else "cpu"]
    return {g.id: multiple for g in analysis.groups
            if g.prunable and g.channels % multiple == 0
            and g.channels >= AUTO_MIN_BLOCKS * multiple}


TOLERANCE = 0.005  # the selection aims for MACs within 0.5% below the target


def _swap_towards_target(counter: MacCounter, keep: np.ndarray, units, budget: float,
                         candidates: int = 96, rounds: int = 32) -> None:
    """If the fill left more than 0.5% of the budget unused, swap one low-scored kept unit for
    one well-scored unkept unit whose cost fits the gap better, then fill again; repeat."""
    for _ in range(rounds):
        reduce, out = counter.counts(keep)
        current = float(counter.coeff @ (reduce * out))
        if current >= (1.0 - TOLERANCE) * budget:
            return
        kept = [u for u in reversed(units) if keep[u.chunk].all() and u.can_remove(keep)]
        free = [u for u in units if not keep[u.chunk].any() and u.can_add(keep)][:candidates]
        kept = kept[:candidates]
        if not kept or not free:
            return
        add_r = np.stack([counter.reduce[:, u.chunk].sum(1) for u in free], 1)
        add_o = np.stack([counter.out[:, u.chunk].sum(1) for u in free], 1)
        best, choice = current, None
        for unit in kept:
            chunk = unit.chunk
            r = reduce - counter.reduce[:, chunk].sum(1)
            o = out - counter.out[:, chunk].sum(1)
            macs = counter.coeff @ ((r[:, None] + add_r) * (o[:, None] + add_o))
            allowed = np.array([u.prev is not chunk for u in free])
            ok = np.flatnonzero((macs <= budget + 1e-6) & allowed)
            if len(ok) and macs[ok].max() > best:
                best = float(macs[ok].max())
                choice = (chunk, free[int(ok[np.argmax(macs[ok])])].chunk)
        if choice is None:
            if not _make_room(counter, keep, kept, free, budget, current):
                return
        else:
            keep[choice[0]] = False
            keep[choice[1]] = True
        _fill(counter, keep, [u for u in units if not keep[u.chunk].any()], budget)


def _make_room(counter: MacCounter, keep: np.ndarray, kept, free, budget: float,
               current: float, removals: int = 8) -> bool:
    """Add one well-scored unit by dropping the fewest low-scored kept ones that make it fit,
    if that lands closer to the budget. Returns whether ``keep`` changed."""
    best, plan = current, None
    for unit in free[:16]:
        trial = keep.copy()
        trial[unit.chunk] = True
        dropped = []
        for other in kept[:removals]:
            if counter.macs(trial) <= budget + 1e-6:
                break
            if other.chunk is unit.prev:
                continue
            trial[other.chunk] = False
            dropped.append(other)
        macs = counter.macs(trial)
        if best < macs <= budget + 1e-6:
            best, plan = macs, trial
    if plan is None:
        return False
    keep[:] = plan
    return True


def _keep_every_tensor_alive(analysis: ChannelAnalysis, scores: np.ndarray, keep: np.ndarray,
                             optional: list) -> list:
    """Make sure every tracked tensor (e.g. one part of a Split) keeps at least one channel."""
    prunable = analysis.prunable_mask()
    unit_of = {}
    for position, unit in enumerate(optional):
        for channel in unit.chunk.tolist():
            unit_of[channel] = position
    forced = set()
    seen = set()
    for tracked in analysis.tracked.values():
        channels = analysis.channel_of_atom[tracked.ids]
        if (channels < 0).any() or not prunable[channels].all():
            continue
        key = tuple(np.unique(channels).tolist())
        if key in seen:
            continue
        seen.add(key)
        if keep[channels].any():
            continue
        best = int(channels[np.lexsort((channels, -scores[channels]))[0]])
        forced.add(unit_of[best])
        keep[optional[unit_of[best]].chunk] = True
    return [u for i, u in enumerate(optional) if i not in forced]


def _bisect_prefix(counter: MacCounter, base: np.ndarray, units, budget: float) -> int:
    """Largest k such that keeping the first k units stays within budget (MACs are monotone)."""
    lo, hi = 0, len(units)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        trial = base.copy()
        for unit in units[:mid]:
            trial[unit.chunk] = True
        if counter.macs(trial) <= budget + 1e-6:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _fill(counter: MacCounter, keep: np.ndarray, units, budget: float) -> None:
    """Add, in score order, every remaining unit that still fits (incremental MAC deltas)."""
    reduce, out = counter.counts(keep)
    current = float(counter.coeff @ (reduce * out))
    for unit in units:
        if current >= budget:
            break
        chunk = unit.chunk
        if keep[chunk].any() or not unit.can_add(keep):
            continue
        dr = counter.reduce[:, chunk].sum(axis=1)
        do = counter.out[:, chunk].sum(axis=1)
        new = float(counter.coeff @ ((reduce + dr) * (out + do)))
        if new <= budget + 1e-6:
            keep[chunk] = True
            reduce, out, current = reduce + dr, out + do, new
