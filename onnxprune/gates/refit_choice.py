"""The choice among refit selections (``--refit-weighting auto``, ``--refit-rounds auto``).

Each candidate (a weighting, a number of rounds) runs its own ``iterative_refit_scores``; its
selection at the target is pruned and recalibrated as its rounds are, and the candidate whose
outputs stay closest to the original's on ``HELD_OUT`` samples of the data outside the
calibration pick wins (the gates' distillation loss, ``autobot.task_loss``: KL divergence of
class logits, MSE otherwise). Only training data is used: the choice never sees the figures'
evaluation samples. The pipeline then recalibrates the winner once more, with its own
settings (exclusions, frozen layers).

On the Fashion-MNIST validation split the weighting choice picked Fisher for the deep residual
nets and relative for the shallow ones (``benchmarks/yardstick_val_fisher.json``); the rounds
choice (3 or 10) picked 10 where 10 rounds were ahead on validation (MobileNetV2) and 3 where
they were behind (ResNet), ``benchmarks/yardstick_val_rounds_auto.json``. The cost is one scoring
per round of every candidate (round 1 once per weighting: it does not depend on the round
count) plus one recalibration and one held-out pass each.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from onnxprune.gates.executor import TorchGraph

HELD_OUT = 1024  # samples of the data, outside the calibration pick, that judge the candidates
ROUNDS_AUTO = (3, 10)  # --refit-rounds auto: the round counts tried (validation search)


def label(weighting: str, rounds: int) -> str:
    """A candidate's name in notes and distances: ``relative/3``."""
    return f"{weighting}/{rounds}"


def rounds_to_score(candidates: Sequence[tuple[str, int]]) -> int:
    """Scorings ``choose_refit`` runs: round 1 once per weighting (it does not depend on the
    round count), every later round of every candidate."""
    return len({w for w, _ in candidates}) + sum(r - 1 for _, r in candidates)


def choose_refit(model, analysis, x, target: float, candidates: Sequence[tuple[str, int]], *,
                 round_to, samples: int, seed: int, device: str, progress=None,
                 **settings) -> tuple[np.ndarray, tuple[str, int], dict]:
    """(scores, the winning (weighting, rounds), {label: its held-out distance}).

    ``settings``: ``iterative_refit_scores``' other keywords (``batch``, ``memory_budget``,
    ``recalibration``, ...); ``progress(k)`` counts the scorings (``rounds_to_score``)."""
    from onnxprune.gates.refit_select import iterative_refit_scores

    found, first, done = {}, {}, 0

    def report(k):
        if progress is not None:
            progress(k)

    for weighting, rounds in candidates:
        if weighting not in first:  # round 1 does not depend on the round count: once
            first[weighting] = iterative_refit_scores(
                model, analysis, x, target, rounds=1, round_to=round_to, samples=samples,
                seed=seed, device=device, weighting=weighting, **settings)
            done += 1
            report(done)

        def step(r, before=done):
            if r > 1:
                report(before + r - 1)

        found[(weighting, rounds)] = iterative_refit_scores(
            model, analysis, x, target, rounds=rounds, round_to=round_to, samples=samples,
            seed=seed, device=device, weighting=weighting, progress=step,
            initial=first[weighting], **settings)
        done += rounds - 1
    distances = held_out_distances(model, analysis, x, target, found, round_to=round_to,
                                   samples=samples, seed=seed, device=device,
                                   batch=settings.get("batch", 64),
                                   recalibration=settings.get("recalibration"),
                                   memory_budget=settings.get("memory_budget"))
    best = min(found, key=lambda c: distances[c])  # the first candidate on a tie
    return found[best], best, {label(*c): round(float(d), 6) for c, d in distances.items()}


def held_out_distances(model, analysis, x, target: float, scores: dict, *, round_to,
                       samples: int, seed: int, device: str, batch: int = 64,
                       recalibration: tuple[int, int] | None = None,
                       memory_budget=None) -> dict:
    """{candidate: distance to the original on the held-out samples} of each candidate's
    ``scores``, selected at ``target``, pruned and recalibrated on the calibration pick."""
    from onnxprune.gates.refit_select import _pruned_recalibrated
    from onnxprune.lazydata import subset
    from onnxprune.select import select

    order = np.random.default_rng(seed).permutation(len(x))
    held = np.sort(order[samples:samples + HELD_OUT])
    held = held if len(held) else np.sort(order[:samples])
    cal_samples, cal_batch = recalibration or (samples, batch)
    reference = _outputs(model, subset(x, held), batch, device)
    found = {}
    for candidate, candidate_scores in scores.items():
        keep = select(analysis, candidate_scores, target,
                      round_to(analysis) if round_to else 1).keep
        pruned = _pruned_recalibrated(model, analysis, keep, x, cal_samples, cal_batch, seed,
                                      device, memory_budget)
        found[candidate] = _distance(reference, _outputs(pruned, subset(x, held), batch, device))
    return found


def _outputs(model, x, batch: int, device: str) -> torch.Tensor:
    """The first output over ``x``, in batches, on the CPU."""
    graph = TorchGraph(model).float().to(device)
    parts = []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            out = graph(torch.as_tensor(x[start:start + batch]).to(device))
            parts.append((out[0] if isinstance(out, tuple) else out).float().cpu())
    return torch.cat(parts)


def _distance(reference: torch.Tensor, pruned: torch.Tensor) -> float:
    """The gates' distillation loss of ``pruned`` against ``reference`` (``autobot.task_loss``:
    KL on class logits, MSE otherwise)."""
    from onnxprune.gates.autobot import task_loss

    return float(task_loss(pruned, None, reference))
