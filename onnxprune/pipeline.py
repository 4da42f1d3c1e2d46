"""``compress``: analysis → channel scores (AutoBot gates or a baseline) → exact-target selection
→ surgery → recalibration → validation (and benchmark) in ONNX Runtime → atomic save + report.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from onnxprune.errors import OnnxPruneError
from onnxprune.gates.config import (CALIBRATION_SAMPLES, METHODS, RECALIBRATION_MODES,
                                     GateConfig)
from onnxprune.graph import atomic_write, ensure_node_names, load_model, save_model



@dataclass(frozen=True)
class CompressConfig:
    """Every setting of one ``compress`` run (recorded in the report)."""

    model: str
    output: str
    target: float = 0.5
    data: str | None = None
    eval_data: str | None = None
    report: str | None = None
    method: str = "autobot"
    beta: float = GateConfig.beta
    gamma: float = GateConfig.gamma
    lr: float = GateConfig.lr
    batch_size: int = GateConfig.batch_size
    iterations: int = GateConfig.iterations
    seed: int = GateConfig.seed
    recalibrate: bool = True
    recalibration: str = RECALIBRATION_MODES[0]
    calibration_samples: int = CALIBRATION_SAMPLES
    round_to: int = 1
    fraction: float | None = None
    limit: int | None = None
    input_size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    bench: bool = False
    provider: str = "auto"
    resume: bool = False
    force: bool = False
    quiet: bool = False
    max_accuracy_drop: float | None = None
    min_agreement: float | None = None


def _log(config: CompressConfig, message: str) -> None:
    if not config.quiet:
        print(message, file=sys.stderr, flush=True)


def _check_config(config: CompressConfig) -> None:
    if config.method not in METHODS:
        raise OnnxPruneError(f"--method must be one of {', '.join(METHODS)}")
    if config.recalibration not in RECALIBRATION_MODES:
        raise OnnxPruneError(f"--recalibration must be one of {', '.join(RECALIBRATION_MODES)}")
    if not 0.0 < config.target <= 1.0:
        raise OnnxPruneError(f"--target must be in (0, 1], got {config.target}")
    if min(config.iterations, config.batch_size, config.round_to,
           config.calibration_samples) < 1:
        raise OnnxPruneError("--iterations, --batch-size, --round-to and --calibration-samples "
                             "must be positive")
    out = Path(config.output)
    if out.exists() and out.resolve() == Path(config.model).resolve() and not config.force:
        raise OnnxPruneError(f"{out}: refusing to overwrite the input model (use --force)")
    if not out.resolve().parent.is_dir():
        raise OnnxPruneError(f"{out.parent}: output folder does not exist")


def _datasets(config: CompressConfig, model: onnx.ModelProto):
    """Training/calibration data (or None for data-free) and held-out evaluation data."""
    from onnxprune.data import load_dataset
    from onnxprune.runtime.session import model_input_shape, model_num_classes

    shape, classes = model_input_shape(model), model_num_classes(model)
    kwargs = dict(input_shape=shape, input_size=config.input_size, mean=config.mean,
                  std=config.std, num_classes=classes)
    train = load_dataset(config.data, fraction=config.fraction, limit=config.limit,
                         **kwargs) if config.data else None
    held_out = load_dataset(config.eval_data, **kwargs) if config.eval_data else None
    return train, held_out, shape


def _training_inputs(config, model, train, shape):
    """Inputs (and labels) for gate training and calibration; synthetic when no data."""
    if train is not None:
        mode = "cross-entropy on labels" if train.y is not None else "distillation (no labels)"
        return train.x, train.y, mode
    from onnxprune.gates.synthetic import synthesize

    if shape is None or any(not isinstance(d, int) for d in shape[1:]):
        raise OnnxPruneError("data-free mode needs a static input shape (besides the batch)")
    _log(config, "onnxprune: warning: no --data given: running data-free on synthetic inputs; "
                 "real data gives better accuracy")
    x, how = synthesize(model, tuple(shape[1:]), seed=config.seed)
    return x, None, f"data-free distillation ({how})"


def _checkpoint_path(config: CompressConfig) -> Path:
    return Path(str(config.output) + ".ckpt.npz")


def _settings_key(config: CompressConfig) -> str:
    keep = {k: v for k, v in asdict(config).items()
            if k not in ("report", "eval_data", "bench", "provider", "resume", "force", "quiet")}
    return json.dumps(keep, sort_keys=True, default=str)


def _scores(config, model, analysis, x, y):
    """Per-channel scores of the chosen method, and notes for the report."""
    if config.method != "autobot":
        from onnxprune.scores import baseline_scores

        scores, notes = baseline_scores(config.method, analysis, config.seed)
        return scores, notes, None
    from onnxprune.gates.autobot import train_gates
    from onnxprune.gates.checkpoint import Checkpointer

    gate_config = GateConfig(beta=config.beta, gamma=config.gamma, lr=config.lr,
                             batch_size=config.batch_size, iterations=config.iterations,
                             seed=config.seed)
    checkpointer = Checkpointer(_checkpoint_path(config), _settings_key(config))
    state = checkpointer.load() if config.resume else None
    if config.resume and state is None:
        _log(config, "onnxprune: no checkpoint to resume from; starting from the beginning")
    progress = _progress_printer(config, checkpointer)
    result = train_gates(model, analysis, x, y, config.target, gate_config, progress, state)
    history = {"best_iteration": result.best_iteration, "last": result.history[-1:]}
    return result.gates, [], history


def _progress_printer(config, checkpointer):
    start = time.monotonic()

    def progress(record: dict, snapshot) -> None:
        it = record["iteration"]
        if it % 10 == 0 or it == config.iterations:
            checkpointer.save(snapshot())
        if config.quiet or (it % 10 and it != config.iterations):
            return
        done = it / config.iterations
        bar = "#" * int(24 * done) + "-" * (24 - int(24 * done))
        print(f"\r[{bar}] {it}/{config.iterations} loss {record['loss']:.3f} "
              f"task {record['task']:.3f} flops {record['flops']:.3f} bool {record['bool']:.3f} "
              f"MACs {record['macs_ratio']:.3f} {time.monotonic() - start:.0f}s",
              end="\n" if it == config.iterations or not sys.stderr.isatty() else "",
              file=sys.stderr, flush=True)

    return progress


def kept_channels(analysis, keep: np.ndarray) -> dict[str, np.ndarray]:
    """For each tensor with a tracked channel axis 1 (conv and gemm outputs, whether they
    start a group or only carry one, like a depthwise conv): its kept channels' original
    indices."""
    atom_kept = np.where(analysis.channel_of_atom < 0, True,
                         keep[np.maximum(analysis.channel_of_atom, 0)])
    kept = {name: np.flatnonzero(atom_kept[t.ids]) for name, t in analysis.tracked.items()
            if t.axis == 1}
    for name, atoms in analysis.source_atoms.items():
        kept.setdefault(name, np.flatnonzero(atom_kept[atoms]))
    return kept


def compress(config: CompressConfig) -> dict:
    """Run the whole pipeline; returns the report (also written to ``config.report``)."""
    from onnxprune.analysis.groups import analyze_channels
    from onnxprune.analysis.summary import count_macs, count_params
    from onnxprune.select import select
    from onnxprune.surgery import prune_model

    _check_config(config)
    started = time.monotonic()
    loaded = load_model(config.model)
    model = loaded.model
    ensure_node_names(model)
    train, held_out, shape = _datasets(config, model)
    analysis = analyze_channels(model)
    if not analysis.prunable_mask().any():
        raise OnnxPruneError("nothing to prune: no channel group is prunable "
                             "(see 'onnxprune analyze' for the barriers)")
    x, y, mode = _training_inputs(config, model, train, shape)
    scores, notes, training = _scores(config, model, analysis, x, y)
    selection = select(analysis, scores, config.target, config.round_to)
    pruned = prune_model(model, selection.plan(analysis))
    recalibrated = []
    if config.recalibrate:
        from onnxprune.gates.recalibrate import recalibrate

        pick = np.random.default_rng(config.seed).permutation(len(x))[:config.calibration_samples]
        pruned, recalibrated = recalibrate(model, pruned, x[np.sort(pick)],
                                           kept_channels(analysis, selection.keep),
                                           mode=config.recalibration)
    report = _report(config, model, pruned, analysis, selection, mode, notes, training,
                     recalibrated, count_macs, count_params)
    report["validation"] = _validate(config, model, pruned, held_out, train, x)
    if held_out is not None and held_out.y is not None:
        report["accuracy_before"] = report["validation"]["accuracy_original"]
        report["accuracy_after"] = report["validation"]["accuracy_pruned"]
    if config.bench:
        from onnxprune.runtime.bench import bench_models

        report["benchmark"] = bench_models([model, pruned], provider=config.provider,
                                           batches=(1, 32), iterations=30,
                                           names=("original", "pruned"))
    report["seconds"] = round(time.monotonic() - started, 2)
    save_model(pruned, config.output, external_data=loaded.used_external_data or None,
               force=config.force, protect=(config.model,))
    if config.report:
        with atomic_write(config.report) as handle:
            json.dump(report, handle, indent=2)
    _checkpoint_path(config).unlink(missing_ok=True)
    return report


def _report(config, model, pruned, analysis, selection, mode, notes, training, recalibrated,
            count_macs, count_params) -> dict:
    macs_after = count_macs(pruned)
    if macs_after != selection.macs:
        raise OnnxPruneError(f"internal: selected {selection.macs} MACs but the pruned graph has "
                             f"{macs_after}", exit_code=3)
    groups = [{"id": g.id, "kept": int(selection.keep[g.offset:g.offset + g.channels].sum()),
               "total": g.channels, "prunable": g.prunable} for g in analysis.groups]
    odd = [g for g in groups if g["kept"] < g["total"] and g["kept"] % 8]
    if odd and config.round_to == 1:
        notes = [*notes, f"{len(odd)} pruned group(s) keep a channel count that is not a multiple "
                         f"of 8; ONNX Runtime's CPU kernels run such convs in a slower layout "
                         f"(see README benchmarks): consider --round-to 8"]
    return {
        "model": config.model, "output": config.output, "method": config.method,
        "target": config.target, "macs_before": selection.macs_before, "macs_after": macs_after,
        "macs_ratio": macs_after / max(selection.macs_before, 1),
        "params_before": count_params(model), "params_after": count_params(pruned),
        "groups": groups, "task_loss": mode, "recalibrated_convs": len(recalibrated),
        "recalibration": recalibrated,
        "threshold": selection.threshold, "notes": notes, "training": training,
        "settings": {k: v for k, v in asdict(config).items() if k not in ("quiet",)},
    }


def _validate(config, model, pruned, held_out, train, x):
    from onnxprune.data import Dataset
    from onnxprune.runtime.validate import validate_models

    if held_out is None:  # agreement on a fixed random sample of the training inputs
        pick = np.sort(np.random.default_rng(config.seed).permutation(len(x))[:256])
        data = Dataset(x[pick], None)
    else:
        data = held_out
    result = validate_models(model, pruned, data, provider=config.provider,
                             names=("original", "pruned"),
                             max_accuracy_drop=config.max_accuracy_drop,
                             min_agreement=config.min_agreement)
    result["data"] = "eval-data" if held_out is not None else "training inputs (no --eval-data)"
    return result


def check_thresholds(report: dict) -> None:
    """Exit code 1 (a failed check) when a validation threshold of the run failed."""
    from onnxprune.errors import check_failed

    failures = report.get("validation", {}).get("failures") or []
    if failures:
        raise check_failed("; ".join(failures))


def format_compress(report: dict) -> str:
    """The summary table printed after a run."""
    from onnxprune.report import human

    v = report.get("validation", {})
    rows = [
        ("method", report["method"]),
        ("MACs", f"{human(report['macs_before'])} -> {human(report['macs_after'])} "
                 f"({100 * report['macs_ratio']:.2f}%, target {100 * report['target']:.1f}%)"),
        ("params", f"{human(report['params_before'])} -> {human(report['params_after'])}"),
        ("groups pruned", f"{sum(g['kept'] < g['total'] for g in report['groups'])} of "
                          f"{len(report['groups'])}"),
        ("task loss", report["task_loss"]),
        ("recalibrated convs", report["recalibrated_convs"]),
    ]
    if v.get("accuracy_original") is not None:
        rows.append(("accuracy", f"{v['accuracy_original']:.2f}% -> {v['accuracy_pruned']:.2f}% "
                                 f"({v['data']})"))
    if v.get("agreement") is not None:
        rows.append(("top-1 agreement", f"{100 * v['agreement']:.2f}%"))
    bench = report.get("benchmark")
    if bench:
        for batch, speed in bench["models"][1]["speedup"].items():
            rows.append((f"speedup batch {batch}", f"{speed['p50']:.2f}x ({bench['provider']})"))
    rows.append(("output", report["output"]))
    rows.append(("seconds", report["seconds"]))
    for note in report.get("notes", []):
        rows.append(("note", note))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
