"""How ``compress`` scores channels: the method ``auto`` resolves to, the refit selection with
its rounds and weighting, AutoBot's gates with their checkpoint, the baselines; and the small
helpers the pipeline shares with them (a model's fixed batch, the recalibration's batch)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import onnx

from onnxprune.gates.config import REFIT_WEIGHTINGS, GateConfig
from onnxprune.progress import Steps


def log(config, message: str) -> None:
    """A line on stderr unless --quiet."""
    if not config.quiet:
        print(message, file=sys.stderr, flush=True)


def checkpoint_path(config) -> Path:
    """Where gate training checkpoints (``--resume`` reads it; removed after a finished run)."""
    return Path(str(config.output) + ".ckpt.npz")


def settings_key(config) -> str:
    """The settings a checkpoint must match to be resumed (not outputs, figures or speed)."""
    keep = {k: v for k, v in asdict(config).items()
            if k not in ("report", "html", "summary_md", "eval_data", "bench", "provider",
                         "resume", "force", "quiet", "progress", "finetune_epochs", "workers",
                         "memory_budget",
                         "finetune_iterations",
                         "allow_small_eval", "max_accuracy_drop", "min_agreement")}
    return json.dumps(keep, sort_keys=True, default=str)


def resolve_method(config) -> str:
    """``auto``: refit where a least-squares refit follows the selection (it won every
    Fashion-MNIST validation cell against autobot there, with --data and data-free:
    benchmarks/yardstick_val_search.json, yardstick_val_datafree.json), autobot otherwise (under
    --recalibration stats AutoBot won 7 of 8 validation cells against refit:
    benchmarks/yardstick_val_stats.json)."""
    if config.method != "auto":
        return config.method
    refit_follows = config.recalibrate and config.recalibration == "reconstruct"
    return "refit" if refit_follows else "autobot"


def refit_method_scores(config, model, analysis, x, device, calibration):
    """The refit method's scores in --refit-rounds rounds with --refit-weighting (``auto``:
    each candidate, the one closer to the original on held-out samples; ``refit_choice``), and
    its notes."""
    from onnxprune.gates.refit_choice import ROUNDS_AUTO, choose_refit, label, rounds_to_score
    from onnxprune.gates.refit_select import iterative_refit_scores
    from onnxprune.select import auto_round_to

    samples = calibration.samples if calibration else config.calibration_samples
    batch = fixed_batch(model) or (calibration.score_batch if calibration else 64)

    def round_to(a):
        return (auto_round_to(a, provider_kind(config.provider))
                if config.round_to == "auto" else config.round_to)

    weightings = (REFIT_WEIGHTINGS[:2] if config.refit_weighting == "auto"
                  else (config.refit_weighting,))
    counts = ROUNDS_AUTO if config.refit_rounds == "auto" else (config.refit_rounds,)
    candidates = [(w, r) for r in counts for w in weightings]
    with Steps(config.quiet, config.progress).phase(
            "refit scores", rounds_to_score(candidates)) as update:
        update(0, "round 1")  # announces the phase: a round takes minutes at 224x224
        settings = dict(round_to=round_to, samples=config.calibration_samples,
                        seed=config.seed, batch=batch, device=device,
                        memory_budget=config.memory_budget, progress=update,
                        recalibration=(samples, calibration_batch(model, min(samples, len(x)))))
        if len(candidates) > 1:
            scores, chosen, distances = choose_refit(model, analysis, x, config.target,
                                                     candidates, **settings)
        else:
            chosen, distances = candidates[0], None
            scores = iterative_refit_scores(model, analysis, x, config.target,
                                            weighting=chosen[0], rounds=chosen[1], **settings)
    weighting, rounds = chosen
    notes = [f"refit scores in {rounds} rounds"] if rounds > 1 else []
    if distances:
        asked = [f"--refit-{k} auto" for k, v in (("weighting", config.refit_weighting),
                                                 ("rounds", config.refit_rounds)) if v == "auto"]
        found = ", ".join(f"{k} {v:.4g}" for k, v in distances.items())
        notes.append(f"{' and '.join(asked)} chose {label(*chosen)} (held-out KL to the "
                     f"original: {found})")
    if weighting != "relative":
        notes.append(f"refit costs weighted by the {weighting} diagonal")
    return scores, notes, None


def channel_scores(config, model, analysis, x, y, device="cpu", calibration=None):
    """Per-channel scores of the chosen method, and notes for the report (``calibration``:
    a ``compress_data.Calibration``: the samples the recalibrations of refit's rounds may use
    and the batch of its forward passes)."""
    if config.method == "refit":
        return refit_method_scores(config, model, analysis, x, device, calibration)
    if config.method != "autobot":
        from onnxprune.scores import baseline_scores

        scores, notes = baseline_scores(config.method, analysis, config.seed)
        return scores, notes, None
    from onnxprune.gates.autobot import train_gates
    from onnxprune.gates.checkpoint import Checkpointer

    batch = fixed_batch(model) or config.batch_size
    gate_config = GateConfig(beta=config.beta, gamma=config.gamma, lr=config.lr,
                             batch_size=batch, iterations=config.iterations,
                             seed=config.seed)
    checkpointer = Checkpointer(checkpoint_path(config), settings_key(config))
    state = checkpointer.load() if config.resume else None
    if config.resume and state is None:
        log(config, "onnxprune: no checkpoint to resume from; starting from the beginning")
    with Steps(config.quiet, config.progress).phase("gate training", config.iterations) as update:
        progress = _gate_progress(config, checkpointer, update)
        result = train_gates(model, analysis, x, y, config.target, gate_config, progress, state,
                             device=device, workers=config.workers)
    history = {"best_iteration": result.best_iteration, "last": result.history[-1:],
               "batch_size": batch}
    notes = [] if batch == config.batch_size else [
        f"the model's batch size is fixed at {batch}: gate training ran at batch {batch}"]
    return result.gates, notes, history


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """The first input's static batch size, or None when the batch axis is dynamic."""
    from onnxprune.runtime.session import model_input_shape

    shape = model_input_shape(model)
    if shape and isinstance(shape[0], int) and shape[0] > 0:
        return int(shape[0])
    return None


def _gate_progress(config, checkpointer, update):
    """Checkpoints every 10 iterations; the bar shows the loss terms."""

    def progress(record: dict, snapshot) -> None:
        it = record["iteration"]
        if it % 10 == 0 or it == config.iterations:
            checkpointer.save(snapshot())
        update(it, f"loss {record['loss']:.3f} task {record['task']:.3f} "
                   f"flops {record['flops']:.3f} bool {record['bool']:.3f} "
                   f"MACs {record['macs_ratio']:.3f}")

    return progress


def provider_kind(provider: str) -> str:
    """'cuda' for --provider cuda, else 'cpu' (auto may fall back to it; today both need 8)."""
    return "cuda" if provider == "cuda" else "cpu"


def calibration_batch(model, samples: int) -> int:
    """The recalibration's batch: the model's fixed one, else 64 or half the calibration set
    (the ridge's cross-validation folds are alternate batches)."""
    return fixed_batch(model) or min(64, max(1, -(-samples // 2)))
