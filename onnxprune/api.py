"""The public API: one function per CLI command, each taking a frozen config or plain arguments."""

from __future__ import annotations

import os
from dataclasses import dataclass

from onnxprune.graph import ensure_node_names, load_model


@dataclass(frozen=True)
class AnalyzeConfig:
    model: str


def analyze(model: str | os.PathLike) -> dict:
    """Summary of an ONNX model: I/O, opset, op counts, params, MACs (batch 1)."""
    from onnxprune.analysis.summary import summarize

    loaded = load_model(model)
    ensure_node_names(loaded.model)
    return summarize(loaded.model)


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
    input_size: tuple[int, int] | None = None  # (H, W) for image folders with dynamic sizes
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    threads: int | None = None


def validate(config: ValidateConfig) -> dict:
    """Compare the pruned model with the original on ``config.data`` in ONNX Runtime.

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
        input_size=config.input_size,
        mean=config.mean,
        std=config.std,
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
    )
