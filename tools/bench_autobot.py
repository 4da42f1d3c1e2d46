"""Benchmark AutoBot against the baselines on the reference MNIST models (issue 4).

For each model and MAC target, runs through the public API (``CompressConfig`` +
``onnxprune.api.compress``, quiet):

* ``autobot`` (labels, cross-entropy), ``l1``, ``bn-scale``, ``random`` — all recalibrated
  (the default);
* ``autobot`` with ``recalibrate=False`` (the plain AutoBot result);
* every method with ``recalibration="stats"`` (the issue's adaptive-BN correction: each kept
  channel's mean and std matched to the original's, no least-squares refit);
* ``autobot`` distillation (unlabeled: a temporary npz with only ``x``);
* ``autobot`` data-free (no data: synthetic inputs).

Each row records held-out accuracy (models/mnist_test.npz) of the original and of the pruned model
*before any fine-tuning*, the MAC ratio (checked: ≤ target and ≥ 99.5% of it), and the seconds.
Prints a markdown table and writes JSON with the machine, versions and every row.

The training split (models/mnist_train.npz) is stored sorted by class; every method gets the
same seeded shuffle of it (``--no-shuffle`` to use the file as is). ``--seeds 0,1,2`` repeats
every run per seed (gates, calibration subset, random scores) and judges the means.

    python tools/bench_autobot.py --models vgg,resnet,mobilenetv2 --targets 0.5,0.25 \
        --iterations 200 --json benchmarks/autobot.json
    python tools/bench_autobot.py --quick        # smoke run: vgg, 0.5, 5 iterations
    python tools/bench_autobot.py --dataset fashion [...]   # = tools/bench_yardstick.py [...]

``--dataset fashion`` runs the Fashion-MNIST yardstick of issue 14 (``tools/bench_yardstick.py``,
which takes the remaining options: our methods x recalibrations against the onnxsim peer).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

UNPRUNED = {"vgg": 99.1, "resnet": 99.1, "mobilenetv2": 99.0}  # models/manifest.json
BASELINES = ("l1", "bn-scale", "random")


def runs() -> list[tuple[str, str, dict]]:
    """(method label, mode label, CompressConfig overrides) for one model and target."""
    return [
        ("autobot", "labels", dict(method="autobot")),
        ("l1", "labels", dict(method="l1")),
        ("bn-scale", "labels", dict(method="bn-scale")),
        ("random", "labels", dict(method="random")),
        ("autobot", "no-recalibrate", dict(method="autobot", recalibrate=False)),
        ("autobot", "distillation", dict(method="autobot", data="UNLABELED")),
        ("autobot", "data-free", dict(method="autobot", data=None)),
        ("l1", "no-recalibrate", dict(method="l1", recalibrate=False)),
        ("random", "no-recalibrate", dict(method="random", recalibrate=False)),
        *((method, "stats", dict(method=method, recalibration="stats"))
          for method in ("autobot",) + BASELINES),
    ]


def machine() -> dict:
    from onnxprune.runtime.bench import cpu_model

    cpu = cpu_model()
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"cpu": cpu or platform.processor(), "cores": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(),
            "load_average_at_start": load}


def versions() -> dict:
    import onnx
    import onnxruntime
    import torch

    import onnxprune

    return {"onnxprune": onnxprune.__version__, "torch": torch.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__}


def prepare_data(folder: Path, shuffle: bool) -> tuple[str, str]:
    """(labeled npz, unlabeled npz) in ``folder``: mnist_train, optionally shuffled (seed 0)."""
    data = np.load(ROOT / "models" / "mnist_train.npz")
    x, y = data["x"], data["y"]
    if shuffle:
        order = np.random.default_rng(0).permutation(len(x))
        x, y = x[order], y[order]
    labeled, unlabeled = folder / "train.npz", folder / "train_unlabeled.npz"
    np.savez(labeled, x=x, y=y)
    np.savez(unlabeled, x=x)
    return str(labeled), str(unlabeled)


def one_run(model: str, target: float, overrides: dict, args, folder: Path,
            labeled: str, unlabeled: str, seed: int) -> dict:
    from onnxprune.api import compress

    try:
        from onnxprune.pipeline import CompressConfig
    except ImportError:  # before the module was renamed
        from onnxprune.compress import CompressConfig

    data = overrides.pop("data", labeled)
    if data == "UNLABELED":
        data = unlabeled
    config = CompressConfig(model=str(ROOT / "models" / f"{model}.onnx"),
                            output=str(folder / "out.onnx"), target=target, data=data,
                            eval_data=str(ROOT / "models" / "mnist_test.npz"),
                            iterations=args.iterations, seed=seed, quiet=True, force=True,
                            **overrides)
    started = time.monotonic()
    report = compress(config)
    seconds = time.monotonic() - started
    before, after = report["macs_before"], report["macs_after"]
    return {
        "accuracy_before": report.get("accuracy_before"),
        "accuracy_after": report.get("accuracy_after"),
        "agreement": report["validation"].get("agreement"),
        "macs_before": before, "macs_after": after, "macs_ratio": after / before,
        "macs_ok": bool(after <= target * before and after >= 0.995 * target * before),
        "recalibrated_convs": report.get("recalibrated_convs"),
        "task_loss": report.get("task_loss"), "notes": report.get("notes", []),
        "best_iteration": (report.get("training") or {}).get("best_iteration"),
        "seconds": round(seconds, 1),
    }


def run_pair(model, target, args, wanted, tmp, labeled, unlabeled) -> list[dict]:
    """Every run of one model and target (in its own output folder)."""
    if args.jobs > 1:
        import torch

        torch.set_num_threads(1)
    folder = Path(tmp) / f"{model}_{target}"
    folder.mkdir(exist_ok=True)
    rows = []
    for seed, (method, mode, overrides) in ((s, r) for s in args.seeds for r in runs()):
        if wanted and f"{method}/{mode}" not in wanted:
            continue
        row = {"model": model, "target": target, "method": method, "mode": mode, "seed": seed}
        row.update(one_run(model, target, dict(overrides), args, folder, labeled, unlabeled,
                           seed))
        rows.append(row)
        print(f"{model} {target} {method} {mode} seed {seed}: {row['accuracy_before']:.1f} -> "
              f"{row['accuracy_after']:.1f}  MACs {row['macs_ratio']:.4f}  "
              f"{row['seconds']:.0f}s", file=sys.stderr, flush=True)
    return rows


def _key(row: dict) -> tuple:
    return row["model"], row["target"], row["method"], row["mode"]


def mean_rows(rows: list[dict]) -> list[dict]:
    """One row per (model, target, method, mode), in first-seen order: accuracy averaged over
    the seeds run, and whether every seed's MACs were within bounds."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(_key(row), []).append(row)
    return [{"model": key[0], "target": key[1], "method": key[2], "mode": key[3],
             "seeds": [r["seed"] for r in same],
             "accuracy_before": same[0]["accuracy_before"],
             "accuracy_after": float(np.mean([r["accuracy_after"] for r in same])),
             "accuracy_after_each": [r["accuracy_after"] for r in same],
             "macs_ratio": float(np.mean([r["macs_ratio"] for r in same])),
             "macs_ok": all(r["macs_ok"] for r in same),
             "seconds": float(np.mean([r["seconds"] for r in same]))}
            for key, same in groups.items()]


# the acceptance is judged separately for each recalibration: (label, mode of the rows)
RECALIBRATIONS = (("reconstruct", "labels"), ("stats", "stats"))


def _accuracy_checks(means: dict, targets, mode: str) -> list[dict]:
    """AutoBot against every baseline, and the 0.5 bar, on the rows of one mode."""
    checks = []
    for model in sorted({key[0] for key in means}):
        for target in targets:
            auto = means.get((model, target, "autobot", mode))
            if auto is None:
                continue
            for base in BASELINES:
                other = means.get((model, target, base, mode))
                if other is not None:
                    checks.append({"model": model, "target": target, "check": f"beats {base}",
                                   "ok": auto["accuracy_after"] > other["accuracy_after"],
                                   "autobot": round(auto["accuracy_after"], 2),
                                   "other": round(other["accuracy_after"], 2)})
            if target == 0.5:
                unpruned = auto["accuracy_before"] or UNPRUNED.get(model)
                checks.append({"model": model, "target": target,
                               "check": "within 1.5 points of unpruned",
                               "ok": auto["accuracy_after"] >= unpruned - 1.5,
                               "autobot": round(auto["accuracy_after"], 2), "other": unpruned})
    return checks


def acceptance(rows: list[dict], targets) -> dict:
    """On accuracy averaged over the seeds, under one recalibration setting: AutoBot (labels)
    beats every baseline everywhere and at 0.5 stays within 1.5 points; and every single run's
    MACs are within 0.5% under the target. ``ok`` when some recalibration passes it all;
    ``by_recalibration`` gives each one's verdict."""
    means = {_key(r): r for r in mean_rows(rows)}
    macs = [{"model": r["model"], "target": r["target"],
             "check": f"MACs within 0.5% under target ({r['method']} {r['mode']} "
                      f"seed {r['seed']})",
             "ok": r["macs_ok"], "autobot": r["macs_ratio"], "other": r["target"]}
            for r in rows]
    macs_ok = all(c["ok"] for c in macs)
    checks, verdicts = list(macs), {}
    for label, mode in RECALIBRATIONS:
        these = _accuracy_checks(means, targets, mode)
        if these:
            verdicts[label] = macs_ok and all(c["ok"] for c in these)
            checks += [{**c, "recalibration": label} for c in these]
    return {"ok": any(verdicts.values()), "by_recalibration": verdicts, "checks": checks}


def table(rows: list[dict]) -> str:
    lines = ["| model | target | method | mode | accuracy before → after (mean) | each seed | "
             "MAC ratio | seconds |", "|---|---|---|---|---|---|---|---|"]
    for r in mean_rows(rows):
        each = " / ".join(f"{a:.1f}" for a in r["accuracy_after_each"])
        lines.append(f"| {r['model']} | {r['target']} | {r['method']} | {r['mode']} | "
                     f"{r['accuracy_before']:.1f} → {r['accuracy_after']:.2f} | {each} | "
                     f"{r['macs_ratio']:.4f}{'' if r['macs_ok'] else ' (!)'} | "
                     f"{r['seconds']:.0f} |")
    return "\n".join(lines)


def summary_table(rows: list[dict]) -> str:
    """The README table: one line per model and target, accuracy means over the seeds."""
    means = {_key(r): r for r in mean_rows(rows)}

    def acc(model, target, method, mode):
        r = means.get((model, target, method, mode))
        return "-" if r is None else f"{r['accuracy_after']:.2f}"

    lines = ["| model | target | AutoBot | L1 | bn-scale | random | AutoBot, no recal. | "
             "L1 / random, no recal. | AutoBot / L1 / random, stats recal. | distillation | "
             "data-free | AutoBot MACs | AutoBot s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for model, target in dict.fromkeys(key[:2] for key in means):
        auto = means.get((model, target, "autobot", "labels"))
        cells = [acc(model, target, m, "labels") for m in ("autobot",) + BASELINES]
        cells += [acc(model, target, "autobot", "no-recalibrate"),
                  f"{acc(model, target, 'l1', 'no-recalibrate')} / "
                  f"{acc(model, target, 'random', 'no-recalibrate')}",
                  " / ".join(acc(model, target, m, "stats") for m in ("autobot", "l1", "random")),
                  acc(model, target, "autobot", "distillation"),
                  acc(model, target, "autobot", "data-free")]
        cells += ([f"{auto['macs_ratio']:.4f}", f"{auto['seconds']:.0f}"] if auto else ["-", "-"])
        before = auto["accuracy_before"] if auto else UNPRUNED.get(model)
        lines.append(f"| {model} ({before:.1f}) | {target} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--dataset=") else (
            argv[i + 1] if arg == "--dataset" and i + 1 < len(argv) else None)
        if value is not None:
            rest = argv[:i] + argv[i + (1 if "=" in arg else 2):]
            if value == "fashion":
                sys.path.insert(0, str(ROOT / "tools"))
                import bench_yardstick

                return bench_yardstick.main(rest)
            if value != "mnist":
                parser_error = f"--dataset: expected mnist or fashion, got {value!r}"
                print(parser_error, file=sys.stderr)
                return 2
            argv = rest
            break
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="vgg,resnet,mobilenetv2")
    parser.add_argument("--targets", default="0.5,0.25")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--seeds", default="0",
                        help="comma list of seeds; every run is repeated per seed and the "
                             "acceptance uses the mean accuracy")
    parser.add_argument("--methods", default=None,
                        help="comma list of row labels to run, e.g. 'autobot/labels,l1/labels'")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--no-shuffle", action="store_true",
                        help="use mnist_train.npz in its stored (class-sorted) order")
    parser.add_argument("--jobs", type=int, default=1,
                        help="run (model, target) pairs in this many processes (1 torch thread "
                             "each); seconds then include the contention")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: vgg, target 0.5, 5 iterations")
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    if args.quick:
        args.models, args.targets, args.iterations = "vgg", "0.5", 5
    try:
        import torch

        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    except ImportError:
        pass
    models = [m for m in args.models.split(",") if m]
    targets = [float(t) for t in args.targets.split(",") if t]
    wanted = set(args.methods.split(",")) if args.methods else None
    pairs = [(model, target) for model in models for target in targets]
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        labeled, unlabeled = prepare_data(Path(tmp), shuffle=not args.no_shuffle)
        work = [(model, target, args, wanted, tmp, labeled, unlabeled) for model, target in pairs]
        if args.jobs > 1:
            import multiprocessing

            with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
                chunks = pool.starmap(run_pair, work)
        else:
            chunks = [run_pair(*w) for w in work]
    rows = [row for chunk in chunks for row in chunk]
    result = {
        "machine": machine(), "versions": versions(),
        "settings": {"models": models, "targets": targets, "iterations": args.iterations,
                     "jobs": args.jobs,
                     "seeds": args.seeds, "train_data": "models/mnist_train.npz" + (
                         "" if args.no_shuffle else " (seeded shuffle, seed 0)"),
                     "eval_data": "models/mnist_test.npz",
                     "accuracy": "held-out top-1 %, before any fine-tuning"},
        "rows": rows, "means": mean_rows(rows), "acceptance": acceptance(rows, targets),
        "total_seconds": round(time.monotonic() - started, 1),
    }
    print(table(rows))
    print()
    print(summary_table(rows))
    failed = [c for c in result["acceptance"]["checks"] if not c["ok"]]
    verdicts = result["acceptance"]["by_recalibration"]
    print(f"\nacceptance: {'PASS' if result['acceptance']['ok'] else 'FAIL'} ("
          + ", ".join(f"{k} recal.: {'pass' if v else 'fail'}" for k, v in verdicts.items())
          + ")" + "".join(f"\n  failed: {c['model']} {c['target']} {c['check']} "
                          f"[{c.get('recalibration', 'all')}] ({c['autobot']} vs {c['other']})"
                          for c in failed))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
