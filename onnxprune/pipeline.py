"""``compress``: analysis → channel scores (AutoBot gates or a baseline) → exact-target selection
→ surgery → recalibration → validation (and benchmark) in ONNX Runtime → atomic save + report.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from onnxprune.compress_data import (Inputs, calibration_pick,  # noqa: F401
                                     calibration_within_budget, prepare_inputs,
                                     with_data_shape)
from onnxprune.compress_scores import (calibration_batch, channel_scores,  # noqa: F401
                                       checkpoint_path, provider_kind, resolve_method)
from onnxprune.errors import OnnxPruneError
from onnxprune.gates.config import (CALIBRATION_SAMPLES, HOLDOUT, METHODS, RECALIBRATION_MODES,
                                     REFIT_ROUNDS, REFIT_WEIGHTINGS, GateConfig)
from onnxprune.graph import atomic_write, ensure_node_names, load_model, save_model
from onnxprune.preprocess import Preprocessing
from onnxprune.progress import Steps



@dataclass(frozen=True)
class CompressConfig:
    """Every setting of one ``compress`` run (recorded in the report)."""

    model: str
    output: str
    target: float = 0.5
    data: str | None = None
    eval_data: str | None = None
    holdout: float = HOLDOUT  # without eval_data: the seeded part of data held out for figures
    allow_small_eval: bool = False
    report: str | None = None
    html: str | None = None  # the self-contained HTML report (the [report] extra)
    summary_md: str | None = None  # the summary as Markdown, for CI step summaries
    method: str = "auto"  # see resolve_method
    refit_weighting: str = "relative"  # refit_select: per-layer relative errors, or "fisher"
    refit_rounds: int | str = REFIT_ROUNDS  # rounds of the refit selection, or "auto"
    beta: float = GateConfig.beta
    gamma: float = GateConfig.gamma
    lr: float = GateConfig.lr
    batch_size: int = GateConfig.batch_size
    iterations: int = GateConfig.iterations
    seed: int = GateConfig.seed
    recalibrate: bool = True
    recalibration: str = RECALIBRATION_MODES[0]
    calibration_samples: int = CALIBRATION_SAMPLES
    round_to: int | str = "auto"  # a channel multiple, or "auto" (select.auto_round_to)
    exclude: tuple[str, ...] = ()  # node/tensor globs whose channels stay whole
    fraction: float | None = None
    limit: int | None = None
    preprocessing: Preprocessing = Preprocessing()
    input_shapes: dict | None = None  # {input name: dims} where the model's dims are dynamic
    device: str = "auto"  # torch device of gate training, recalibration and synthesis
    memory_budget: int | None = None  # bytes for cached activations (None: gates.memory default)
    workers: int = 0  # DataLoader worker processes decoding the data (0: the main process)
    finetune_epochs: int = 0  # after recalibration: fine-tune every weight (distillation)
    finetune_iterations: int | None = None  # instead of epochs: optimizer steps
    bench: bool = False
    provider: str = "auto"
    resume: bool = False
    force: bool = False
    quiet: bool = False
    progress: bool = False  # show progress bars also when stderr is not a terminal
    max_accuracy_drop: float | None = None
    min_agreement: float | None = None


def _check_config(config: CompressConfig) -> None:
    if config.method not in METHODS:
        raise OnnxPruneError(f"--method must be one of {', '.join(METHODS)}")
    if config.refit_weighting not in REFIT_WEIGHTINGS:
        raise OnnxPruneError(f"--refit-weighting must be one of {', '.join(REFIT_WEIGHTINGS)}")
    rounds = config.refit_rounds
    if rounds != "auto" and (isinstance(rounds, bool) or not isinstance(rounds, int)
                             or rounds < 1):
        raise OnnxPruneError("--refit-rounds must be 'auto' or a positive integer")
    if config.recalibration not in RECALIBRATION_MODES:
        raise OnnxPruneError(f"--recalibration must be one of {', '.join(RECALIBRATION_MODES)}")
    if not 0.0 < config.target <= 1.0:
        raise OnnxPruneError(f"--target must be in (0, 1], got {config.target}")
    round_to = 1 if config.round_to == "auto" else config.round_to
    if not isinstance(round_to, int) or min(config.iterations, config.batch_size, round_to,
                                            config.calibration_samples) < 1:
        raise OnnxPruneError("--iterations, --batch-size, --round-to (or 'auto') and "
                             "--calibration-samples must be positive")
    if not 0.0 < config.holdout < 1.0:
        raise OnnxPruneError(f"--holdout must be in (0, 1), got {config.holdout}")
    out = Path(config.output)
    if out.exists() and out.resolve() == Path(config.model).resolve() and not config.force:
        raise OnnxPruneError(f"{out}: refusing to overwrite the input model (use --force)")
    if not out.resolve().parent.is_dir():
        raise OnnxPruneError(f"{out.parent}: output folder does not exist")


def _device(config: CompressConfig) -> str:
    from onnxprune.gates.device import resolve_device

    return resolve_device(config.device)


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
    from onnxprune.select import auto_round_to, select
    from onnxprune.surgery import prune_model

    _check_config(config)
    requested, config = config.method, replace(config, method=resolve_method(config))
    started = time.monotonic()
    loaded = load_model(config.model)
    model = loaded.model
    ensure_node_names(model)
    config = with_data_shape(config, model)
    shapes = config.input_shapes
    analysis, excluded = _prunable_analysis(config, model)
    device = _device(config)
    inputs = prepare_inputs(config, model, device)
    calibration = calibration_within_budget(config, model, inputs.x, device)
    scores, notes, training = channel_scores(config, model, analysis, inputs.x, inputs.y, device,
                                      calibration)
    round_to = (auto_round_to(analysis, provider_kind(config.provider))
                if config.round_to == "auto" else config.round_to)
    selection = select(analysis, scores, config.target, round_to)
    pruned = prune_model(model, selection.plan(analysis), analysis=analysis, input_shapes=shapes)
    pruned, recalibrated, calibration_indices = _recalibrate(
        config, model, pruned, analysis, selection, inputs, excluded, device,
        calibration.samples)
    report = _report(config, model, pruned, analysis, selection, inputs,
                     [*notes, calibration.note] if calibration.note else notes, training,
                     recalibrated)
    report["excluded"] = excluded
    report["method_requested"] = requested
    auto = ([f"--method auto chose {config.method} (refit where a least-squares refit "
             f"follows, autobot otherwise)"] if requested == "auto" else [])
    report["notes"] = [*analysis.notes, *auto, *report["notes"]]
    report["round_to"] = round_to if isinstance(round_to, int) else {
        "auto": sorted(set(round_to.values())) or [1], "groups": round_to}
    report["evaluation"] = {**inputs.about, "samples": len(inputs.evaluation),
                            "calibration_indices": calibration_indices}
    if config.finetune_epochs or config.finetune_iterations:
        pruned, report["finetune"] = _finetune(config, model, pruned, inputs, device)
    report["validation"] = _validate(config, model, pruned, inputs,
                                     min(VALIDATION_BATCH, calibration.score_batch))
    if report.get("finetune") is not None:
        report["finetune"]["accuracy_after_finetuning"] = report["validation"]["accuracy_pruned"]
    if inputs.evaluation.y is not None:
        report["accuracy_before"] = report["validation"]["accuracy_original"]
        report["accuracy_after"] = report["validation"]["accuracy_pruned"]
    if config.bench:
        _bench(config, model, pruned, report)
    report["seconds"] = round(time.monotonic() - started, 2)
    _write_outputs(config, loaded, pruned, report)
    return report


def _prunable_analysis(config: CompressConfig, model):
    """The channel analysis with --exclude applied, and the excluded groups; bad input when
    nothing is left to prune."""
    from onnxprune.analysis.groups import analyze_channels
    from onnxprune.exclude import exclude_groups

    analysis, excluded = exclude_groups(analyze_channels(model, input_shapes=config.input_shapes),
                                        config.exclude)
    if not analysis.prunable_mask().any():
        why = analysis.why_nothing_prunable() or (
            "every prunable group is excluded by --exclude" if excluded else "see 'onnxprune "
            "analyze' for the barriers")
        raise OnnxPruneError(f"nothing to prune: {why}")
    return analysis, excluded


def _write_outputs(config: CompressConfig, loaded, pruned, report: dict) -> None:
    """The pruned model and the JSON report, each written atomically; the checkpoint goes."""
    save_model(pruned, config.output, external_data=loaded.used_external_data or None,
               force=config.force, protect=(config.model,))
    if config.report:
        with atomic_write(config.report) as handle:
            json.dump(report, handle, indent=2)
    checkpoint_path(config).unlink(missing_ok=True)


def _recalibrate(config, model, pruned, analysis, selection, inputs, excluded, device,
                 samples):
    """(pruned model, recalibrated layer records, the calibration samples' indices in --data)
    on ``samples`` of the seeded pick (``calibration_within_budget``)."""
    if not config.recalibrate:
        return pruned, [], []
    from onnxprune.gates.recalibrate import recalibrate

    pick = calibration_pick(len(inputs.x), samples, config.seed)
    batch = calibration_batch(model, len(pick))
    frozen = {node for row in excluded for node in row["nodes"]}
    with Steps(config.quiet, config.progress).phase("recalibration") as update:
        pruned, recalibrated = recalibrate(
            model, pruned, inputs.x.subset(pick), kept_channels(analysis, selection.keep),
            mode=config.recalibration, device=device, frozen=frozen,
            batch_size=batch, memory_budget=config.memory_budget,
            progress=lambda done, total, name: update(done, name, total))
    training = inputs.about.get("training_indices")
    return pruned, recalibrated, (np.asarray(training)[pick].tolist() if training is not None
                                  else pick.tolist())


def _finetune(config, model, pruned, inputs, device):
    """The fine-tuned model and its report section (accuracy just after pruning, per epoch)."""
    from onnxprune.gates.config import FinetuneConfig
    from onnxprune.gates.finetune import finetune

    before = _validate(config, model, pruned, inputs)
    settings = FinetuneConfig(epochs=max(config.finetune_epochs, 1),
                              iterations=config.finetune_iterations,
                              batch_size=min(FinetuneConfig.batch_size, len(inputs.x)),
                              seed=config.seed)
    held = inputs.evaluation
    with Steps(config.quiet, config.progress).phase("fine-tuning") as update:
        result = finetune(pruned, model, inputs.x, inputs.y, settings, device=device,
                          eval_set=(held.x, held.y) if held.y is not None else None,
                          progress=lambda step, total, terms: update(
                              step, " ".join(f"{k} {v:.3f}" for k, v in terms.items()), total),
                          workers=config.workers)
    section = {"steps": result.steps, "epochs": result.history,
               "accuracy_after_pruning": before["accuracy_pruned"],
               "agreement_after_pruning": before["agreement"],
               "settings": asdict(settings)}
    return result.model, section


def _bench(config, model, pruned, report) -> None:
    """Benchmark both models; flag every batch size where the pruned one is slower."""
    from onnxprune.runtime.bench import bench_models

    bench = bench_models([model, pruned], provider=config.provider, batches=(1, 32),
                         iterations=30, names=("original", "pruned"),
                         input_shapes=config.input_shapes)
    report["benchmark"] = bench
    slower = {batch: s["p50"] for batch, s in bench["models"][1]["speedup"].items()
              if s.get("p50") is not None and s["p50"] < 1.0}
    bench["slower_batches"] = sorted(slower)
    for batch, speed in slower.items():
        report["notes"].append(f"the pruned model is SLOWER than the original at batch {batch} "
                               f"({speed:.2f}x, {bench['provider']}): see the per-node profile "
                               f"(onnxprune report) and --round-to")


def _report(config, model, pruned, analysis, selection, inputs, notes, training,
            recalibrated) -> dict:
    from onnxprune.analysis.summary import count_macs, count_params

    macs_after = count_macs(pruned, input_shapes=config.input_shapes)
    if macs_after != selection.macs:
        raise OnnxPruneError(f"internal: selected {selection.macs} MACs but the pruned graph has "
                             f"{macs_after}", exit_code=3)
    groups = [{"id": g.id, "kept": int(selection.keep[g.offset:g.offset + g.channels].sum()),
               "total": g.channels, "prunable": g.prunable,
               **({} if g.prunable else {"reason": g.reason})} for g in analysis.groups]
    odd = [g for g in groups if g["kept"] < g["total"] and g["kept"] % 8]
    if odd and config.round_to == 1:
        notes = [*notes, f"{len(odd)} pruned group(s) keep a channel count that is not a multiple "
                         f"of 8; ONNX Runtime's CPU kernels run such convs in a slower layout "
                         f"(see README benchmarks): consider --round-to auto"]
    settings = {k: v for k, v in asdict(config).items() if k not in ("quiet", "progress")}
    return {
        "model": config.model, "output": config.output, "method": config.method,
        "target": config.target, "macs_before": selection.macs_before, "macs_after": macs_after,
        "macs_ratio": macs_after / max(selection.macs_before, 1),
        "params_before": count_params(model), "params_after": count_params(pruned),
        "groups": groups, "task_loss": inputs.mode, "recalibrated_convs": len(recalibrated),
        "recalibration": recalibrated, "data_classes": inputs.classes,
        "threshold": selection.threshold, "notes": notes, "training": training,
        "settings": settings,
    }


VALIDATION_BATCH = 32  # ONNX Runtime batch of the validation, smaller for large inputs


def _validate(config, model, pruned, inputs, batch: int = VALIDATION_BATCH):
    """Both models on the evaluation set in ONNX Runtime, ``batch`` samples a run (compress
    passes the refit scores' budget-sized batch; below ``VALIDATION_BATCH`` the samples are
    large for the budget, and the sessions run without ORT's arena, which keeps a run's peak)."""
    from onnxprune.runtime.validate import validate_models

    with Steps(config.quiet, config.progress).phase("validation") as update:
        result = validate_models(model, pruned, inputs.evaluation, provider=config.provider,
                                 names=("original", "pruned"), batch_size=batch,
                                 max_accuracy_drop=config.max_accuracy_drop,
                                 min_agreement=config.min_agreement,
                                 allow_small_eval=config.allow_small_eval,
                                 synthetic=bool(inputs.about.get("synthetic")),
                                 workers=config.workers,
                                 progress=lambda done, total: update(done, "samples", total),
                                 memory_arena=batch >= VALIDATION_BATCH)
    result["data"] = inputs.about["source"]
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
    ft = report.get("finetune")
    if ft:
        from onnxprune.report import finetune_rows

        rows += finetune_rows(v.get("accuracy_original"), ft.get("accuracy_after_pruning"),
                              ft["epochs"], ft.get("accuracy_after_finetuning"), ft["steps"])
    if v.get("agreement") is not None:
        rows.append(("top-1 agreement", f"{100 * v['agreement']:.2f}% ({v['data']})"))
    ev = v.get("evidence") or {}
    if ev:
        ci = ev.get("agreement_ci")
        rows.append(("evaluated on", f"{ev['samples']} samples"
                     + (f", 95% CI of agreement {100 * ci[0]:.1f}..{100 * ci[1]:.1f}%" if ci else "")
                     + (" (synthetic: not a measure of accuracy)" if ev.get("synthetic") else
                        " (too few for a CI gate)" if ev.get("small") else "")))
    excluded = report.get("excluded") or []
    if excluded:
        rows.append(("excluded", f"{sum(len(e['groups']) for e in excluded)} group(s) kept whole "
                                 f"by --exclude"))
    bench = report.get("benchmark")
    if bench:
        for batch, speed in bench["models"][1]["speedup"].items():
            slow = "  SLOWER" if speed["p50"] is not None and speed["p50"] < 1.0 else ""
            rows.append((f"speedup batch {batch}",
                         f"{speed['p50']:.2f}x ({bench['provider']}){slow}"))
    rows.append(("output", report["output"]))
    rows.append(("seconds", report["seconds"]))
    for note in report.get("notes", []):
        rows.append(("note", note))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
