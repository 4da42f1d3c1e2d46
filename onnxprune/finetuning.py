"""``finetune``: train every weight of a pruned ONNX model, distilled from the original, on one
process or many (``torchrun --nproc-per-node N -m onnxprune finetune ...``); rank 0 alone writes.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from onnxprune.errors import OnnxPruneError
from onnxprune.gates.config import OPTIMIZERS, FinetuneConfig
from onnxprune.graph import atomic_write, ensure_node_names, load_model, save_model
from onnxprune.preprocess import Preprocessing
from onnxprune.progress import Steps

AUGMENT = ("auto", "on", "off")  # auto: random flip/crop for image folders, none for .npz


@dataclass(frozen=True)
class FinetuneRun:
    """Every setting of one ``finetune`` run (recorded in its report)."""

    pruned: str
    teacher: str
    data: str
    output: str
    eval_data: str | None = None
    report: str | None = None
    epochs: int = FinetuneConfig.epochs
    iterations: int | None = None
    batch_size: int = FinetuneConfig.batch_size
    lr: float = FinetuneConfig.lr
    optimizer: str = FinetuneConfig.optimizer
    weight_decay: float = FinetuneConfig.weight_decay
    warmup: float = FinetuneConfig.warmup
    temperature: float = FinetuneConfig.temperature
    alpha: float = FinetuneConfig.alpha
    augment: str = "auto"
    seed: int = 0
    checkpoint_every: int = FinetuneConfig.checkpoint_every
    device: str = "cpu"
    workers: int = 0  # decoding workers (ONNX Runtime validation; see gates/loader.py)
    limit: int | None = None
    fraction: float | None = None
    preprocessing: Preprocessing = Preprocessing()
    resume: bool = False
    force: bool = False
    quiet: bool = False
    progress: bool = False


def gate_config(run: FinetuneRun, image_folder: bool) -> FinetuneConfig:
    if run.optimizer not in OPTIMIZERS:
        raise OnnxPruneError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}")
    if run.augment not in AUGMENT:
        raise OnnxPruneError(f"--augment must be one of {', '.join(AUGMENT)}")
    return FinetuneConfig(
        epochs=run.epochs, iterations=run.iterations, batch_size=run.batch_size, lr=run.lr,
        optimizer=run.optimizer, weight_decay=run.weight_decay, warmup=run.warmup,
        temperature=run.temperature, alpha=run.alpha, seed=run.seed,
        checkpoint_every=run.checkpoint_every,
        augment=run.augment == "on" or (run.augment == "auto" and image_folder))


def checkpoint_path(output: str) -> Path:
    return Path(str(output) + ".finetune.ckpt.npz")


def run_finetune(run: FinetuneRun) -> dict:
    """Load, fine-tune, validate in ONNX Runtime against the teacher, write (rank 0): the report."""
    from onnxprune.data import load_dataset
    from onnxprune.gates.checkpoint import Checkpointer
    from onnxprune.gates.device import resolve_device
    from onnxprune.gates.finetune import distributed_context, finetune
    from onnxprune.runtime.session import model_input_shape, model_num_classes
    from onnxprune.runtime.validate import validate_models

    device = resolve_device(run.device)
    loaded = load_model(run.pruned)
    teacher = load_model(run.teacher).model
    ensure_node_names(loaded.model)
    kwargs = dict(input_shape=model_input_shape(teacher), prep=run.preprocessing,
                  num_classes=model_num_classes(teacher))
    train = load_dataset(run.data, fraction=run.fraction, limit=run.limit, **kwargs)
    held = (load_dataset(run.eval_data, class_names=train.classes, **kwargs)
            if run.eval_data else None)
    config = gate_config(run, Path(run.data).is_dir())
    key = json.dumps({k: v for k, v in asdict(run).items()
                      if k not in ("report", "resume", "force", "quiet", "progress", "workers")},
                     sort_keys=True, default=str)
    checkpointer = Checkpointer(checkpoint_path(run.output), key)
    rank, world = distributed_context(device)
    before = None
    if held is not None and held.y is not None and rank == 0:
        before = validate_models(teacher, loaded.model, held, provider="cpu",
                                 names=("teacher", "pruned"), workers=run.workers)
    steps = Steps(run.quiet or rank > 0, run.progress)
    with steps.phase("fine-tuning") as update:
        result = finetune(loaded.model, teacher, train.x, train.y, config, device=device,
                          eval_set=(held.x, held.y) if held is not None else None,
                          progress=lambda s, t, terms: update(s, _terms(terms), t),
                          checkpointer=checkpointer, resume=run.resume,
                          workers=run.workers)
    report = {"pruned": run.pruned, "teacher": run.teacher, "output": run.output,
              "world_size": world, "steps": result.steps, "epochs": result.history,
              "accuracy_before_pruning": before and before["accuracy_original"],
              "accuracy_after_pruning": before and before["accuracy_pruned"],
              "settings": {k: v for k, v in asdict(run).items() if k not in ("quiet", "progress")}}
    if rank == 0:
        if held is not None:
            report["validation"] = validate_models(teacher, result.model, held, provider="cpu",
                                                   names=("teacher", "fine-tuned"),
                                                   workers=run.workers)
            report["accuracy_teacher"] = report["validation"]["accuracy_original"]
            report["accuracy_after_finetuning"] = report["validation"]["accuracy_pruned"]
        save_model(result.model, run.output, external_data=loaded.used_external_data or None,
                   force=run.force, protect=(run.pruned, run.teacher))
        if run.report:
            with atomic_write(run.report) as handle:
                json.dump(report, handle, indent=2)
        checkpoint_path(run.output).unlink(missing_ok=True)
    return report


def _terms(terms: dict) -> str:
    return " ".join(f"{k} {v:.3f}" for k, v in terms.items())


def format_finetune(report: dict) -> str:
    """The summary table: steps, the accuracy before pruning, after pruning, after each epoch
    and after fine-tuning, the output."""
    from onnxprune.report import finetune_rows, format_rows

    rows = [("steps", f"{report['steps']} on {report['world_size']} process(es)"),
            *finetune_rows(report.get("accuracy_before_pruning"),
                           report.get("accuracy_after_pruning"), report["epochs"],
                           report.get("accuracy_after_finetuning")),
            ("output", report["output"])]
    return format_rows(rows)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
