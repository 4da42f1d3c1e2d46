"""The Fashion-MNIST accuracy yardstick (issue 14): our methods against a peer, same MAC budget.

For each reference model ``models/fashion_<name>.onnx`` and MAC target, runs

* ours, through the public API (``CompressConfig`` + ``compress``): every ``--methods``
  (autobot, refit, l1, bn-scale, random) x every ``--recalibrations`` (reconstruct, stats) x
  every ``--seeds``; gates, refit scores and calibration read the 55,000-image training split,
  figures are measured on ``--split`` (``test``: the 10,000 test images, the final benchmark;
  ``val``: the 5,000 validation images, the only split used to choose settings).
  ``--refit-allocation`` other than compress's runs refit's steps one by one (``one_steps``);
* the peer, onnxsim 0.8.x in its own virtualenv (``tools/yardstick_peer.py``: L2 per layer and
  global, Wanda, each bisected to the same MAC budget, each with its recoveries). The table's
  "peer best" is the best of these on the split measured (generous to the peer: on test it is
  chosen on test).

Statistics, the verdict and the tables live in ``tools/yardstick_table.py``. The verdict judges
``--default`` (``auto``, the default: the method ``compress --method auto`` resolves to under
each recalibration mode, by the pipeline's own ``resolve_method``; or METHOD/RECALIBRATION)
against every other method of ours under the same recalibration and the peer. Prints the
per-run table, the summary table (markdown, the README text) and the verdict; writes JSON
(``--json``); ``--readme README.md`` rewrites only the text between ``<!-- yardstick-table -->``
and ``<!-- /yardstick-table -->``.

    apt-get install -y dataset-fashion-mnist
    python -m venv /tmp/peer-venv && /tmp/peer-venv/bin/pip install 'onnxsim>=0.8,<0.9' onnxruntime
    python tools/bench_yardstick.py --seeds 0,1,2 --json benchmarks/yardstick.json   # full grid
    python tools/bench_yardstick.py --split val --json benchmarks/yardstick_val.json  # selection
    python tools/bench_yardstick.py --quick    # embedded subsets, vgg, 0.5, 5 iterations

Without the Debian package it falls back to the embedded subsets (models/fashion_train.npz,
models/fashion_val.npz) and says so; those figures are not the yardstick.
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
sys.path.insert(0, str(ROOT / "tools"))

from yardstick_peer import (PEER_METHODS, PEER_PYTHON, PEER_RECOVERIES,  # noqa: E402,F401
                            accuracy_ort, call_peer, macs_of, peer_bisect, peer_rows, peer_worker)
from yardstick_table import (BASELINES, DEFAULT, MARKERS, METHODS,  # noqa: E402,F401
                             RECALIBRATIONS, _steps_note, acceptance, mean_rows, peer_best,
                             readme_text, resolve_defaults, rewrite_readme, summary_table, table)

MODELS = ("vgg", "resnet", "mobilenetv2", "resnet56")


# ----------------------------------------------------------------------------------- our side
def one_compress(model: str, target: float, method: str, recalibration: str, seed: int,
                 args, data: dict, folder: Path) -> dict:
    from onnxprune.gates.config import METHODS as WIRED
    from onnxprune.gates.refit_select import ALLOCATIONS
    from onnxprune.pipeline import CompressConfig, compress

    if method not in WIRED or (method == "refit" and args.refit_allocation != ALLOCATIONS[0]):
        # a method (or a refit allocation) not wired into compress: the same steps, one by one
        return one_steps(model, target, method, recalibration, seed, args, data, folder)
    config = CompressConfig(model=model, output=str(folder / "ours.onnx"), target=target,
                            data=data["train"], eval_data=data["eval"], method=method,
                            recalibration=recalibration, iterations=args.iterations, seed=seed,
                            round_to=args.round_to, calibration_samples=args.calibration_samples,
                            quiet=True, force=True, **refit_settings(args))
    started = time.monotonic()
    report = compress(config)
    seconds = time.monotonic() - started
    return _result(report["macs_before"], report["macs_after"], target, seconds,
                   report.get("accuracy_before"), report.get("accuracy_after"))


def refit_settings(args) -> dict:
    """--refit-rounds / --refit-weighting for CompressConfig, where given (else compress's)."""
    found = {}
    if getattr(args, "refit_rounds", None) is not None:
        rounds = args.refit_rounds
        found["refit_rounds"] = rounds if rounds == "auto" else int(rounds)
    if getattr(args, "refit_weighting", None) is not None:
        found["refit_weighting"] = args.refit_weighting
    return found


def _result(before, after, target, seconds, accuracy_before, accuracy_after) -> dict:
    return {"accuracy_before": accuracy_before, "accuracy_after": accuracy_after,
            "macs_before": before, "macs_after": after, "macs_ratio": after / before,
            "macs_ok": bool(after <= target * before),
            "within_half_percent": bool(after >= 0.995 * target * before),
            "seconds": round(seconds, 1)}


_REFIT_SCORES: dict[tuple, np.ndarray] = {}


def one_steps(model: str, target: float, method: str, recalibration: str, seed: int,
              args, data: dict, folder: Path) -> dict:
    """``compress``'s steps for ``--method refit`` before it is wired into the pipeline:
    analysis, refit scores (``onnxprune.gates.refit_select``, on ``--calibration-samples``
    training images), the same selection (``round_to``), surgery, recalibration on the same
    seeded calibration pick as ``compress``, accuracy in ONNX Runtime. The scores do not
    depend on the target or the recalibration mode: computed once per model and seed, their
    time counted in every run that uses them (as ``compress`` would spend it)."""
    import onnx

    from onnxprune.analysis.groups import analyze_channels
    from onnxprune.gates.recalibrate import recalibrate
    from onnxprune.gates.refit_select import refit_scores
    from onnxprune.graph import ensure_node_names
    from onnxprune.pipeline import kept_channels
    from onnxprune.select import auto_round_to, select
    from onnxprune.surgery import prune_model

    if method != "refit":
        raise SystemExit(f"unknown method {method!r}")
    started = time.monotonic()
    original = onnx.load_model(model)
    ensure_node_names(original)
    x = np.load(data["train"])["x"]
    analysis = analyze_channels(original)
    key = (model, seed, args.calibration_samples, args.refit_allocation)
    if key not in _REFIT_SCORES:  # the same for every recalibration mode and target
        scored = time.monotonic()
        _REFIT_SCORES[key] = (refit_scores(original, analysis, x, seed=seed,
                                           samples=args.calibration_samples,
                                           allocation=args.refit_allocation),
                              time.monotonic() - scored)
    else:  # reused: its time counts as if computed again
        started -= _REFIT_SCORES[key][1]
    scores = _REFIT_SCORES[key][0]
    round_to = (auto_round_to(analysis, "cpu") if args.round_to == "auto" else args.round_to)
    selection = select(analysis, scores, target, round_to)
    pruned = prune_model(original, selection.plan(analysis), analysis=analysis)
    pick = np.sort(np.random.default_rng(seed).permutation(len(x))[:args.calibration_samples])
    pruned, _ = recalibrate(original, pruned, x[pick], kept_channels(analysis, selection.keep),
                            mode=recalibration, batch_size=64)
    seconds = time.monotonic() - started
    path = folder / "ours_steps.onnx"
    onnx.save_model(pruned, str(path))
    from onnxprune.analysis.summary import count_macs

    evaluation = np.load(data["eval"])
    return {**_result(selection.macs_before, count_macs(pruned), target, seconds,
                      accuracy_ort(model, evaluation["x"], evaluation["y"]),
                      accuracy_ort(str(path), evaluation["x"], evaluation["y"])),
            "via": "steps"}


def run_model(name: str, args, data: dict, tmp: str) -> list[dict]:
    """Every run of one model: ours (methods x recalibrations x targets x seeds) and the peer."""
    import torch

    torch.set_num_threads(args.threads)
    folder = Path(tmp) / name
    folder.mkdir(exist_ok=True)
    model = str(ROOT / "models" / f"fashion_{name}.onnx")
    x_eval, y_eval = np.load(data["eval"])["x"], np.load(data["eval"])["y"]
    unpruned = accuracy_ort(model, x_eval, y_eval)
    macs_before = macs_of(model)
    rows = []

    def log(row):
        rows.append(row)
        print(f"{name} {row['target']} {row['method']} {row['recalibration']} seed {row['seed']}: "
              f"{row['accuracy_after']:.2f}  MACs {row['macs_ratio']:.4f}  {row['seconds']:.0f}s",
              file=sys.stderr, flush=True)

    for target in args.targets:
        for seed in args.seeds:
            for method in args.methods:
                for recalibration in args.recalibrations:
                    row = {"model": name, "target": target, "method": method,
                           "recalibration": recalibration, "seed": seed, "side": "ours"}
                    row.update(one_compress(model, target, method, recalibration, seed, args,
                                            data, folder))
                    log(row)
        if args.peer:
            peer_rows(name, model, target, args, data, folder, unpruned, macs_before, x_eval,
                      y_eval, log)
    return rows


# ------------------------------------------------------------------------------------ driver
def prepare_data(folder: Path, split: str, quick: bool) -> dict:
    """npz files in ``folder``: the training split (``--data``) and the evaluation split."""
    sys.path.insert(0, str(ROOT / "tools"))
    import fashion_mnist

    if not quick:
        try:
            splits = fashion_mnist.load_splits()
        except fashion_mnist.FashionMNISTMissing as exc:
            print(f"{exc}\nfalling back to the embedded subsets (models/fashion_train.npz, "
                  "models/fashion_val.npz): NOT the yardstick", file=sys.stderr)
            quick = True
    if quick:
        return {"train": str(ROOT / "models" / "fashion_train.npz"),
                "eval": str(ROOT / "models" / "fashion_val.npz"), "embedded": True}
    out = {"embedded": False}
    for label, name in (("train", "train"), ("eval", split)):
        x, y = splits[name]
        path = folder / f"{name}.npz"
        np.savez(path, x=x, y=y)
        out[label] = str(path)
    return out


def machine(threads: int) -> dict:
    from onnxprune.runtime.bench import cpu_model

    cpu = cpu_model()
    return {"cpu": cpu or platform.processor(), "cores": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(),
            "load_average_at_start": os.getloadavg(), "torch_threads": threads}


def versions() -> dict:
    import onnx
    import onnxruntime
    import torch

    import onnxprune

    return {"onnxprune": onnxprune.__version__, "torch": torch.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--targets", default="0.5,0.25")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--recalibrations", default=",".join(RECALIBRATIONS))
    parser.add_argument("--peer", default=",".join(PEER_METHODS),
                        help="peer methods (l2, wanda, l2g = global L2); '' for none")
    parser.add_argument("--peer-python", default=PEER_PYTHON,
                        help="python of the peer's own virtualenv (onnxsim 0.8.x, onnxruntime)")
    parser.add_argument("--peer-batches", type=int, default=8,
                        help="calibration batches of 32 training images for the peer")
    parser.add_argument("--split", choices=("test", "val"), default="test",
                        help="test: the final benchmark; val: the selection split")
    parser.add_argument("--round-to", default="auto",
                        help="CompressConfig.round_to for our side ('auto', the default, or N)")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--calibration-samples", type=int, default=None,
                        help="CompressConfig.calibration_samples (default: compress's)")
    parser.add_argument("--refit-allocation", default="macs",
                        help="refit scores across groups: uniform | macs | error "
                             "(onnxprune.gates.refit_select; chosen on validation)")
    parser.add_argument("--refit-rounds", default=None,
                        help="CompressConfig.refit_rounds: N or auto (default: compress's)")
    parser.add_argument("--refit-weighting", default=None,
                        help="CompressConfig.refit_weighting (default: compress's)")
    parser.add_argument("--default", default=DEFAULT,
                        help="what the acceptance treats as compress's default: a method "
                             "compress resolves per recalibration mode (auto, the default) or "
                             "METHOD/RECALIBRATION")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--jobs", type=int, default=1, help="models run in this many processes")
    parser.add_argument("--json", default=None)
    parser.add_argument("--readme", default=None,
                        help="rewrite the text between the yardstick-table markers of this file")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="no runs: combine the rows of these result files (runs of the same "
                             "settings on different models) into one table / --json / --readme")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run on the embedded subsets: vgg, 0.5, seed 0, 5 iterations")
    return parser


def _normalise(args) -> bool:
    """Lists from the comma-separated options, compress's defaults filled in; False (after
    a one-line message) for a bad --default or a missing peer virtualenv."""
    if args.quick:
        args.models, args.targets, args.seeds, args.iterations = "vgg", "0.5", "0", 5
    args.models = [m for m in args.models.split(",") if m]
    args.targets = [float(t) for t in args.targets.split(",") if t]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    args.methods = [m for m in args.methods.split(",") if m]
    args.recalibrations = [r for r in args.recalibrations.split(",") if r]
    args.peer = [p for p in args.peer.split(",") if p]
    if args.round_to != "auto":
        args.round_to = int(args.round_to)
    if args.calibration_samples is None:
        from onnxprune.gates.config import CALIBRATION_SAMPLES

        args.calibration_samples = CALIBRATION_SAMPLES
    parts = args.default.split("/")
    from onnxprune.gates.config import METHODS as COMPRESS_METHODS

    if len(parts) > 2 or parts[0] not in COMPRESS_METHODS or (
            len(parts) == 2 and parts[1] not in RECALIBRATIONS):
        print(f"--default is a method of compress ({', '.join(COMPRESS_METHODS)}) or "
              "METHOD/RECALIBRATION, e.g. auto or refit/reconstruct", file=sys.stderr)
        return False
    if args.peer and not Path(args.peer_python).is_file():
        print(f"peer python {args.peer_python} not found: python -m venv /tmp/peer-venv && "
              "/tmp/peer-venv/bin/pip install 'onnxsim>=0.8,<0.9' onnxruntime (or --peer '')",
              file=sys.stderr)
        return False
    return True


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--peer-worker"]:
        print(json.dumps(peer_worker(json.loads(argv[1]))))
        return 0
    args = build_parser().parse_args(argv)
    if not _normalise(args):
        return 2
    default = args.default
    if args.merge:
        return merge(args)
    import torch

    torch.set_num_threads(args.threads)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare_data(Path(tmp), args.split, args.quick)
        if data["embedded"]:
            args.split = "val"
        n_eval = int(len(np.load(data["eval"])["y"]))
        work = [(name, args, data, tmp) for name in args.models]
        if args.jobs > 1:
            import multiprocessing

            with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
                chunks = pool.starmap(run_model, work)
        else:
            chunks = [run_model(*w) for w in work]
    rows = [row for chunk in chunks for row in chunk]
    peer_version = next((r["onnxsim"] for r in rows if r.get("onnxsim")), None)
    result = {
        "machine": machine(args.threads), "versions": versions(), "peer_version": peer_version,
        "settings": {"models": args.models, "targets": args.targets, "seeds": args.seeds,
                     "methods": args.methods, "recalibrations": args.recalibrations,
                     "peer": args.peer, "peer_recoveries": list(PEER_RECOVERIES),
                     "peer_batches": args.peer_batches, "split": args.split, "n_eval": n_eval,
                     "embedded_subsets": data["embedded"], "round_to": args.round_to,
                     "iterations": args.iterations, "threads": args.threads, "jobs": args.jobs,
                     "calibration_samples": args.calibration_samples,
                     "refit_allocation": args.refit_allocation, "default": args.default,
                     "refit_rounds": refit_rounds(args),
                     "refit_weighting": refit_settings(args).get("refit_weighting", "relative"),
                     "train_data": "55,000-image training split" if not data["embedded"]
                     else "models/fashion_train.npz",
                     "command": "python tools/bench_yardstick.py " + " ".join(argv),
                     "accuracy": "top-1 %, before any fine-tuning"},
        "rows": rows, "means": mean_rows(rows, n_eval),
        "acceptance": acceptance(rows, n_eval, default),
        "total_seconds": round(time.monotonic() - started, 1),
    }
    return finish(result, args)


def refit_rounds(args=None) -> int | str:
    """The refit rounds of our rows: --refit-rounds, else compress's default."""
    from onnxprune.gates.config import REFIT_ROUNDS

    return refit_settings(args).get("refit_rounds", REFIT_ROUNDS) if args else REFIT_ROUNDS


def merge(args) -> int:
    """One result from several runs (each one measured ours and the peer on its own models)."""
    parts = [json.loads(Path(p).read_text()) for p in args.merge]
    n_eval = {p["settings"]["n_eval"] for p in parts}
    if len(n_eval) != 1:
        raise SystemExit(f"cannot merge runs on different evaluation sets: {sorted(n_eval)}")
    n_eval = n_eval.pop()
    rows = [row for p in parts for row in p["rows"]]
    settings = dict(parts[0]["settings"])
    for key in ("models", "seeds", "targets"):
        settings[key] = list(dict.fromkeys(v for p in parts for v in p["settings"][key]))
    settings["command"] = " + ".join(f"`{p['settings']['command']}`" for p in parts).strip("`")
    settings["merged_from"] = [str(p) for p in args.merge]
    settings["default"] = args.default
    settings["runs"] = [{"command": p["settings"]["command"], "models": p["settings"]["models"],
                         "seeds": p["settings"]["seeds"], "total_seconds": p["total_seconds"],
                         "load_average_at_start": p["machine"].get("load_average_at_start")}
                        for p in parts]
    result = {"machine": parts[0]["machine"], "versions": parts[0]["versions"],
              "peer_version": next((p["peer_version"] for p in parts if p.get("peer_version")),
                                   None), "settings": settings, "rows": rows,
              "means": mean_rows(rows, n_eval),
              "acceptance": acceptance(rows, n_eval, args.default),
              "total_seconds": round(sum(p["total_seconds"] for p in parts), 1)}
    return finish(result, args)


def finish(result: dict, args) -> int:
    rows, n_eval = result["rows"], result["settings"]["n_eval"]
    print(table(rows, n_eval))
    print()
    text = readme_text(result)
    print(text)
    for c in result["acceptance"]["checks"]:
        if not c["ok"]:
            kind = "behind a candidate" if c.get("kind") == "candidate" else "failed"
            print(f"  {kind}: {c['model']} {c['target']} {c['check']} ({c.get('value')} vs "
                  f"{c.get('other')})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.readme:
        rewrite_readme(Path(args.readme), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
