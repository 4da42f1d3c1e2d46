"""Validation-split search of the defaults (issue 14): channel scores x recalibration settings.

The same steps ``compress`` runs (analysis, scores, exact-target selection with ``round_to``
auto, surgery, recalibration) called one by one, so that one set of trained gates is measured
under several recalibration settings without training it again. Figures are top-1 % on the
5,000-image **validation** split of Fashion-MNIST (never test), before any fine-tuning.

Score variants (``--variants``, comma separated):

* ``autobot``           AutoBot gates, cross-entropy task loss (the default of ``compress``)
* ``autobot-kd``        AutoBot gates, distillation task loss (KL to the original's logits;
                        ``train_gates`` with no labels)
* ``autobot-it<N>``     AutoBot, N gate iterations instead of ``--iterations``
* ``autobot-b<B>``, ``autobot-g<G>``  another β / γ
* ``l1``, ``bn-scale``, ``random``   the baselines
* ``refit``             reconstruction-aware selection (``onnxprune.gates.refit_select``), the
                        raw cumulative refit errors (allocation "error")
* ``refit-s<N>``        the same on N calibration images (instead of 512)
* ``refit-r<K>``        ``iterative_refit_scores``: K rounds, each scored on the model pruned so
                        far and recalibrated (allocation "macs" inside; no view)
* ``refit-f...``        the same with weighting "fisher" (loss-weighted refit costs)
* ``refit-a-r<K>``      weighting "auto": both, the one closer to the original on held-out
                        training images (``onnxprune.gates.refit_choice.choose_refit``)
* ``refit-ra``          ``--refit-rounds auto``: of the cached ``refit-r3`` and ``refit-r10``
                        scores, the one closer to the original on held-out training images

``<variant>+u``: the same scores made uniform (rank within the group), so that every group
loses the same fraction of its channels; ``<variant>+m<P>``: divided by the MACs of one channel
of the group to the power P (``onnxprune.scores``); ``<variant>+d<P>``: each removal's increment
of the cumulative score (made monotone), divided so. Scores are cached in ``$YARDSTICK_CACHE``
(``/tmp/yardstick-search-cache``); ``score_seconds`` is 0 for a cached one.

Recalibration settings (``--calibration``, comma separated sample counts), mode reconstruct.

    python tools/yardstick_search.py --models vgg,resnet --targets 0.5,0.25 \
        --variants autobot,autobot-kd,random --calibration 512,2048 \
        --json benchmarks/yardstick_val_search_<name>.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from bench_yardstick import accuracy_ort, machine, versions  # noqa: E402
from onnxprune.scores import discount_by_macs, uniform_within_groups  # noqa: E402


CACHE = Path(os.environ.get("YARDSTICK_CACHE", "/tmp/yardstick-search-cache"))


def cached_scores(name: str, variant: str, model, analysis, x, y, target: float, seed: int,
                  iterations: int) -> tuple[np.ndarray, float]:
    """Scores of ``variant`` (``<base>+u``: made uniform), cached on disk by model/target/seed."""
    base, _, view = variant.partition("+")
    key = f"{name}_{target}_{seed}_{iterations}_{base}.npy"
    path, seconds = CACHE / key, 0.0
    if path.is_file():
        scores = np.load(path)
    elif base.startswith("refit-ra"):  # the rounds candidates' cached scores, judged
        return rounds_auto(name, base, model, analysis, x, y, target, seed, iterations), seconds
    else:
        started = time.monotonic()
        scores = gate_scores(base, model, analysis, x, y, target, seed, iterations)
        seconds = time.monotonic() - started
        CACHE.mkdir(parents=True, exist_ok=True)
        np.save(path, scores)
    if view == "u":
        scores = uniform_within_groups(analysis, scores)
    elif view.startswith("m"):
        scores = discount_by_macs(analysis, scores, float(view[1:] or 1))
    elif view.startswith("d"):
        scores = discount_by_macs(analysis, marginal(analysis, scores), float(view[1:] or 1))
    elif view:
        raise SystemExit(f"unknown view {view!r} of {variant!r}")
    return scores, seconds


def rounds_auto(name: str, base: str, model, analysis, x, y, target: float, seed: int,
                iterations: int) -> np.ndarray:
    """``refit-ra``: ``--refit-rounds auto``'s choice among the (cached) ``refit-r<K>`` scores of
    ``refit_choice.ROUNDS_AUTO``, by the held-out distance ``choose_refit`` uses; the same
    scores and distances as ``compress --refit-rounds auto`` (iterative_refit_scores is
    deterministic), without scoring the candidates again."""
    from onnxprune.gates.refit_choice import ROUNDS_AUTO, held_out_distances
    from onnxprune.select import auto_round_to

    found = {("relative", r): cached_scores(name, f"refit-r{r}", model, analysis, x, y, target,
                                            seed, iterations)[0] for r in ROUNDS_AUTO}
    distances = held_out_distances(model, analysis, x, target, found, samples=512, seed=seed,
                                   device="cpu", round_to=lambda a: auto_round_to(a, "cpu"))
    best = min(found, key=lambda c: distances[c])
    print(f"  rounds auto chose {best[1]}: " + ", ".join(f"{c[1]} {d:.4g}" for c, d in
                                                          distances.items()),
          file=sys.stderr, flush=True)
    return found[best]


def marginal(analysis, scores):
    """Cumulative per-group scores turned into each removal's increment, made monotone."""
    out = np.asarray(scores, dtype=np.float64).copy()
    for g in analysis.groups:
        if g.prunable and g.channels:
            part = out[g.offset:g.offset + g.channels]
            order = np.argsort(part, kind="stable")
            step = np.maximum.accumulate(np.diff(part[order], prepend=0.0))
            part[order] = step
    return out


def gate_scores(variant: str, model, analysis, x, y, target: float, seed: int,
                iterations: int) -> np.ndarray:
    """Per-channel scores of one variant."""
    from onnxprune.gates.config import GateConfig

    if variant in ("l1", "bn-scale", "random"):
        from onnxprune.scores import baseline_scores

        return baseline_scores(variant, analysis, seed)[0]
    if variant.split("-")[0] == "refit":
        return refit_variant(variant, model, analysis, x, target, seed)
    from onnxprune.gates.autobot import train_gates

    settings = {"iterations": iterations, "seed": seed}
    labels = y
    for part in variant.split("-")[1:]:
        if part == "kd":
            labels = None
        elif part.startswith("it"):
            settings["iterations"] = int(part[2:])
        elif part.startswith("b"):
            settings["beta"] = float(part[1:])
        elif part.startswith("g"):
            settings["gamma"] = float(part[1:])
        else:
            raise SystemExit(f"unknown variant part {part!r} in {variant!r}")
    return train_gates(model, analysis, x, labels, target, GateConfig(**settings)).gates


def refit_variant(variant: str, model, analysis, x, target: float, seed: int) -> np.ndarray:
    """``refit``: the raw cumulative refit errors (allocation "error"; ``+m1`` makes them the
    default "macs" allocation); ``refit-s<N>``: on N calibration images instead of 512;
    ``refit-r<K>``: ``iterative_refit_scores`` in K rounds (allocation "macs" inside each round,
    ``round_to`` auto; banded scores: use it without a view)."""
    from onnxprune.gates.refit_select import iterative_refit_scores, raw_refit_scores
    from onnxprune.select import auto_round_to

    settings = {"samples": 512, "rounds": 1}
    for part in variant.split("-")[1:]:
        if part in ("f", "a"):
            settings["weighting"] = "fisher" if part == "f" else "auto"
        elif part[:1] in ("s", "r") and part[1:].isdigit():
            settings["samples" if part[0] == "s" else "rounds"] = int(part[1:])
        else:
            raise SystemExit(f"unknown variant part {part!r} in {variant!r}")
    weighting = settings.get("weighting", "relative")
    if weighting == "auto":
        from onnxprune.gates.refit_choice import choose_refit

        scores, chosen, distances = choose_refit(
            model, analysis, x, target, [(w, settings["rounds"]) for w in ("relative", "fisher")],
            round_to=lambda a: auto_round_to(a, "cpu"), samples=settings["samples"], seed=seed,
            device="cpu")
        print(f"  auto chose {chosen}: {distances}", file=sys.stderr, flush=True)
        return scores
    if settings["rounds"] == 1:
        return raw_refit_scores(model, analysis, x, seed=seed, samples=settings["samples"],
                                weighting=weighting)
    return iterative_refit_scores(model, analysis, x, target, rounds=settings["rounds"],
                                  round_to=lambda a: auto_round_to(a, "cpu"), seed=seed,
                                  samples=settings["samples"], weighting=weighting)


def measure(model, analysis, scores, target, x_train, x_val, y_val, samples: int, seed: int,
            folder: Path, mode: str = "reconstruct") -> dict:
    """Selection, surgery, recalibration on ``samples`` training images, validation accuracy."""
    import onnx

    from onnxprune.gates.recalibrate import recalibrate
    from onnxprune.pipeline import kept_channels
    from onnxprune.select import auto_round_to, select
    from onnxprune.analysis.groups import analyze_channels
    from onnxprune.surgery import prune_model

    analysis = analyze_channels(model)  # surgery edits the analysis' graph in place
    selection = select(analysis, scores, target, auto_round_to(analysis, "cpu"))
    pruned = prune_model(model, selection.plan(analysis), analysis=analysis)
    pick = np.sort(np.random.default_rng(seed).permutation(len(x_train))[:samples])
    started = time.monotonic()
    pruned, _ = recalibrate(model, pruned, x_train[pick], kept_channels(analysis, selection.keep),
                            mode=mode, batch_size=64)
    seconds = time.monotonic() - started
    path = folder / "pruned.onnx"
    onnx.save_model(pruned, str(path))
    return {"accuracy": accuracy_ort(str(path), x_val, y_val),
            "macs_ratio": selection.macs / selection.macs_before,
            "recalibration_seconds": round(seconds, 1)}


def run(args, save) -> list[dict]:
    import onnx
    import torch

    import fashion_mnist
    from onnxprune.analysis.groups import analyze_channels
    from onnxprune.graph import ensure_node_names

    torch.set_num_threads(args.threads)
    splits = fashion_mnist.load_splits()
    x_train, y_train = splits["train"]
    x_val, y_val = splits["val"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            path = str(ROOT / "models" / f"fashion_{name}.onnx")
            model = onnx.load_model(path)
            ensure_node_names(model)
            analysis = analyze_channels(model)
            unpruned = accuracy_ort(path, x_val, y_val)
            for target in args.targets:
                for seed in args.seeds:
                    for variant in args.variants:
                        scores, score_seconds = cached_scores(
                            name, variant, model, analysis, x_train, y_train, target, seed,
                            args.iterations)
                        for samples in args.calibration:
                            row = {"model": name, "target": target, "seed": seed,
                                   "variant": variant, "calibration_samples": samples,
                                   "unpruned": unpruned, "score_seconds": round(score_seconds, 1)}
                            row.update(measure(model, analysis, scores, target, x_train, x_val,
                                               y_val, samples, seed, Path(tmp)))
                            rows.append(row)
                            save(rows)
                            print(f"{name} {target} seed {seed} {variant} cal {samples}: "
                                  f"{row['accuracy']:.2f} (unpruned {unpruned:.2f}) MACs "
                                  f"{row['macs_ratio']:.4f} scores {score_seconds:.0f}s recal "
                                  f"{row['recalibration_seconds']:.0f}s", file=sys.stderr,
                                  flush=True)
    return rows


def summarize(files: list[str], reference: str = "autobot", samples: int = 512) -> dict:
    """Cells (model, target, seed) x variants at ``samples`` calibration images, from the rows
    of ``files`` (a later file's row replaces an earlier one of the same setting): how many
    cells each variant wins against ``reference``, its mean gain over the cells both ran, and
    the gain of more calibration images per variant."""
    rows = {}
    for f in files:
        for r in json.loads(Path(f).read_text())["rows"]:
            rows[(r["model"], r["target"], r["seed"], r["variant"],
                  r["calibration_samples"])] = {**r, "file": f}
    cells: dict[tuple, dict] = {}
    for (model, target, seed, variant, cal), r in rows.items():
        if cal == samples:
            cells.setdefault((model, target, seed), {})[variant] = r["accuracy"]
    variants = sorted({v for c in cells.values() for v in c})
    wins = {}
    for v in variants:
        both = [c for c in cells.values() if v in c and reference in c]
        gains = [c[v] - c[reference] for c in both]
        wins[v] = {"cells": len(both), "wins": sum(g > 0 for g in gains),
                   "ties": sum(g == 0 for g in gains),
                   "mean_gain": round(float(np.mean(gains)), 3) if gains else None,
                   "worst_gain": round(float(min(gains)), 3) if gains else None}
    more = {}
    for (model, target, seed, variant, cal), r in rows.items():
        base = rows.get((model, target, seed, variant, samples))
        if cal != samples and base is not None:
            more.setdefault(f"{variant} cal {cal}", []).append(r["accuracy"] - base["accuracy"])
    return {"reference": reference, "calibration_samples": samples, "files": files,
            "cells": [{"model": k[0], "target": k[1], "seed": k[2], "val_accuracy": v}
                      for k, v in sorted(cells.items())],
            "against_reference": wins,
            "more_calibration": {k: {"runs": len(g), "mean_gain": round(float(np.mean(g)), 3)}
                                 for k, g in sorted(more.items())}}


def summary_markdown(summary: dict, variants: list[str]) -> str:
    head = ["model", "target", "seed", *variants]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in summary["cells"]:
        acc = c["val_accuracy"]
        lines.append(f"| {c['model']} | {c['target']} | {c['seed']} | " + " | ".join(
            f"{acc[v]:.2f}" if v in acc else "-" for v in variants) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="vgg,resnet")
    parser.add_argument("--targets", default="0.5,0.25")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--variants", default="autobot,autobot-kd,random")
    parser.add_argument("--calibration", default="512")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    parser.add_argument("--note", default=None, help="with --summarize: a note kept in the JSON")
    parser.add_argument("--reference", default="autobot",
                        help="with --summarize: the variant every other is compared with")
    parser.add_argument("--summarize", nargs="+", default=None, metavar="JSON",
                        help="no runs: the cells x variants of these result files (--json: the "
                             "summary; --variants: the table's columns)")
    args = parser.parse_args(argv)
    if args.summarize:
        summary = {**summarize(args.summarize, args.reference), "note": args.note,
                   "command": "python tools/yardstick_search.py " + " ".join(
                       sys.argv[1:] if argv is None else argv)}
        print(summary_markdown(summary, [v for v in args.variants.split(",") if v]))
        print(json.dumps(summary["against_reference"], indent=1))
        print(json.dumps(summary["more_calibration"], indent=1))
        if args.json:
            tmp = Path(args.json).with_suffix(".json.tmp")
            tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, args.json)
        return 0
    args.models = [m for m in args.models.split(",") if m]
    args.targets = [float(t) for t in args.targets.split(",") if t]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    args.variants = [v for v in args.variants.split(",") if v]
    args.calibration = [int(c) for c in args.calibration.split(",") if c]
    started = time.monotonic()

    def save(rows):
        if not args.json:
            return
        result = {"issue": 14, "split": "val", "n_eval": 5000,
                  "accuracy": "top-1 % on the 5,000 validation images, before any fine-tuning",
                  "machine": machine(args.threads), "versions": versions(),
                  "command": "python tools/yardstick_search.py " + " ".join(
                      sys.argv[1:] if argv is None else argv),
                  "settings": {k: v for k, v in vars(args).items() if k != "json"},
                  "rows": rows, "total_seconds": round(time.monotonic() - started, 1),
                  "load_average_now": os.getloadavg()}
        tmp = Path(args.json).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, args.json)

    run(args, save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
