"""The public API: one function per CLI command, each taking a frozen config or plain arguments."""

from __future__ import annotations

import os
from dataclasses import dataclass

from onnxprune.graph import ensure_node_names, load_model
from onnxprune.pipeline import CompressConfig  # noqa: F401  (public)
from onnxprune.preprocess import Preprocessing


@dataclass(frozen=True)
class AnalyzeConfig:
    model: str
    input_shapes: dict | None = None  # {input name: dims} for dynamic dims (--input-shape)


def analyze(model: str | os.PathLike, input_shapes: dict | None = None) -> dict:
    """Summary of an ONNX model: I/O, opset, ops, params, MACs (batch 1), groups, barriers."""
    from onnxprune.analysis.groups import analyze_channels
    from onnxprune.analysis.summary import summarize

    loaded = load_model(model)
    ensure_node_names(loaded.model)
    result = summarize(loaded.model, input_shapes=input_shapes)
    analysis = analyze_channels(loaded.model, input_shapes=input_shapes)
    group_macs = analysis.group_macs()
    result["groups"] = [
        {"id": g.id, "channels": g.channels, "prunable": g.prunable, "macs": group_macs[g.id],
         "sources": list(g.sources), **({} if g.prunable else {"reason": g.reason})}
        for g in analysis.groups
    ]
    result["barriers"] = analysis.barriers
    result["prunable_macs"] = analysis.prunable_macs()
    result["notes"] = list(analysis.notes)
    why = analysis.why_nothing_prunable()
    if why:
        result["nothing_prunable"] = why
    return result


@dataclass(frozen=True)
class PruneConfig:
    model: str
    plan: str
    output: str
    masked_reference: str | None = None
    force: bool = False
    input_shapes: dict | None = None


def prune(model, keep):
    """Remove the channels not in ``keep`` ({group id: [kept indices]}) from ``model``.

    ``model`` is a path or an ``onnx.ModelProto``; returns the pruned ``onnx.ModelProto``.
    """
    from onnxprune.surgery import prune_model

    proto = model if not isinstance(model, (str, os.PathLike)) else load_model(model).model
    return prune_model(proto, keep)


def prune_file(config: PruneConfig) -> dict:
    """The ``prune`` command: apply a plan file and write the pruned model atomically."""
    from onnxprune.analysis.summary import count_macs
    from onnxprune.graph import save_model
    from onnxprune.plan import load_plan
    from onnxprune.surgery import masked_reference, prune_model

    keep = load_plan(config.plan)
    loaded = load_model(config.model)
    protect = (config.model, config.plan)
    shapes = config.input_shapes
    pruned = prune_model(loaded.model, keep, input_shapes=shapes)
    reference = (masked_reference(loaded.model, keep, input_shapes=shapes)
                 if config.masked_reference else None)
    result = {"output": config.output, "macs_before": count_macs(loaded.model, input_shapes=shapes),
              "macs_after": count_macs(pruned, input_shapes=shapes),
              "masked_reference": config.masked_reference}
    save_model(pruned, config.output, external_data=loaded.used_external_data or None,
               force=config.force, protect=protect)
    if reference is not None:
        save_model(reference, config.masked_reference,
                   external_data=loaded.used_external_data or None, force=config.force,
                   protect=protect)
    return result


# --- validate and bench (runtime layer; onnxruntime is imported lazily) -----------------------


@dataclass(frozen=True)
class ValidateConfig:
    """Settings of ``validate``: thresholds are percentage points and a 0..1 fraction."""

    original: str
    pruned: str
    data: str
    provider: str = "auto"
    batch_size: int = 32
    limit: int | None = None
    fraction: float | None = None
    max_accuracy_drop: float | None = None  # percentage points
    min_agreement: float | None = None  # fraction 0..1 of matching top-1 classes
    allow_small_eval: bool = False  # let thresholds pass on fewer than MIN_EVAL_SAMPLES samples
    preprocessing: Preprocessing = Preprocessing()  # image-folder conventions
    threads: int | None = None
    workers: int = 0  # threads decoding batches ahead of ONNX Runtime


def validate(config: ValidateConfig) -> dict:
    """Compare the pruned model with the original on ``config.data`` in ONNX Runtime, streamed
    in batches (the data is never held whole).

    Returns ``validate_models``' dict (keys in ``onnxprune.runtime.validate``); a failed threshold
    sets ``passed`` false and lists ``failures`` — the caller decides to exit 1.
    """
    from onnxprune.data import load_dataset
    from onnxprune.runtime.session import model_input_shape, model_num_classes
    from onnxprune.runtime.validate import validate_models

    original = load_model(config.original).model
    pruned = load_model(config.pruned).model
    dataset = load_dataset(
        config.data,
        input_shape=model_input_shape(original),
        prep=config.preprocessing,
        fraction=config.fraction,
        limit=config.limit,
        num_classes=model_num_classes(original),
    )
    return validate_models(
        original, pruned, dataset,
        provider=config.provider,
        batch_size=config.batch_size,
        max_accuracy_drop=config.max_accuracy_drop,
        min_agreement=config.min_agreement,
        threads=config.threads,
        names=(str(config.original), str(config.pruned)),
        allow_small_eval=config.allow_small_eval,
        workers=config.workers,
    )


@dataclass(frozen=True)
class BenchConfig:
    """Settings of ``bench``: speedups are relative to the first model."""

    models: tuple[str, ...]
    provider: str = "auto"
    batches: tuple[int, ...] = (1,)
    warmup: int = 10
    iterations: int | None = None  # default 50 when duration is not set either
    duration: float | None = None  # seconds per model and batch size, instead of iterations
    threads: int | None = None  # intra-op threads; None = onnxruntime's default
    min_speedup: float | None = None
    input_shapes: dict | None = None  # sizes of dynamic non-batch dims (--input-shape)


def bench(config: BenchConfig) -> dict:
    """Latency of each model in ONNX Runtime (keys in ``onnxprune.runtime.bench``).

    A model below ``min_speedup`` sets ``passed`` false and lists ``failures``.
    """
    from onnxprune.runtime.bench import bench_models

    return bench_models(
        list(config.models),
        provider=config.provider,
        batches=tuple(config.batches),
        warmup=config.warmup,
        iterations=config.iterations,
        duration=config.duration,
        threads=config.threads,
        min_speedup=config.min_speedup,
        names=[str(m) for m in config.models],
        input_shapes=config.input_shapes,
    )


def compress(config):
    """The ``compress`` pipeline; takes an ``onnxprune.CompressConfig``, returns the report.

    Example::

        from onnxprune.pipeline import CompressConfig
        report = onnxprune.compress(CompressConfig(model="models/resnet.onnx",
                                                   output="resnet_half.onnx", target=0.5,
                                                   data="models/mnist_train.npz"))
    """
    from onnxprune.pipeline import compress as run

    if config.html:  # refuse before the work, not after it
        from onnxprune.htmlreport.svg import require_matplotlib

        require_matplotlib()
    result = run(config)
    write_reports(result, config.html, config.summary_md, provider=config.provider,
                  force=config.force)
    return result


@dataclass(frozen=True)
class ReportConfig:
    """Settings of ``report``: render a compress report as HTML and/or a Markdown summary."""

    report: str  # the JSON report of a compress run
    html: str | None = None
    summary_md: str | None = None
    profile: bool = True  # ONNX Runtime's per-node profile of both models (the models must exist)
    provider: str = "cpu"
    force: bool = False


def report(config: ReportConfig) -> dict:
    """Write the HTML page and/or the Markdown summary of a compress report; returns the paths."""
    import json
    from pathlib import Path

    from onnxprune.errors import OnnxPruneError

    try:
        data = json.loads(Path(config.report).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise OnnxPruneError(f"{config.report}: not a readable JSON report "
                             f"({exc.__class__.__name__})") from None
    if not isinstance(data, dict) or "macs_before" not in data:
        raise OnnxPruneError(f"{config.report}: not a compress report (no 'macs_before')")
    return write_reports(data, config.html, config.summary_md, profile=config.profile,
                         provider=config.provider, force=config.force,
                         base=Path(config.report).parent)


def write_reports(data: dict, html: str | None, summary_md: str | None, profile: bool = True,
                  provider: str = "cpu", force: bool = False, base=None) -> dict:
    """The HTML page and the Markdown summary of a compress report ``data``; returns the paths."""
    from onnxprune.graph import atomic_write

    written = {}
    if html:
        from onnxprune.htmlreport import build_report_inputs, write_html

        inputs = build_report_inputs(data, analyze, base=base, profile=profile,
                                     provider="cuda" if provider == "cuda" else "cpu")
        written["html"] = write_html(data, html, **inputs, force=force)
    if summary_md:
        from onnxprune.htmlreport import summary_markdown

        with atomic_write(summary_md, force=force) as handle:
            handle.write(summary_markdown(data))
        written["summary_md"] = str(summary_md)
    return written
