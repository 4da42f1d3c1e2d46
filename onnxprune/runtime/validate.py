"""Compare an original and a pruned model in ONNX Runtime on the same inputs.

``validate_models`` returns one JSON-ready dict with stable keys:

- ``original``, ``pruned``: model names (paths, or the graph name of a ModelProto)
- ``samples``: number of inputs run
- ``provider``: the execution provider both sessions really ran on
- ``accuracy_original``, ``accuracy_pruned``: top-1 accuracy in percent (0..100) of the first
  output's argmax against the labels; null without labels or when the first output is not
  class logits ``[N, K]``
- ``accuracy_drop``: ``accuracy_original - accuracy_pruned`` in percentage points, or null
- ``agreement``: fraction (0..1) of samples whose top-1 class is the same in both; null when the
  first output is not class logits
- ``outputs``: ``{name: {max_abs, mean_abs, cosine, rel_max_abs}}`` error statistics of every
  output, pruned against original (``rel_max_abs = max_abs / max |original|``; a statistic that
  is undefined or not finite is null)
- ``thresholds``: ``{max_accuracy_drop (points), min_agreement (fraction)}``, null when unset
- ``evidence``: ``{samples, min_samples, small, synthetic, agreement_ci, accuracy_pruned_ci}``:
  the 95% Wilson intervals of the figures; on fewer than ``min_samples`` samples (or synthetic
  inputs) a set threshold fails closed unless ``allow_small_eval`` (never for synthetic inputs)
- ``passed``: every threshold holds; ``failures``: one message per threshold that does not
"""

from __future__ import annotations

import numpy as np

from onnxprune.data import Dataset
from onnxprune.errors import OnnxPruneError
from onnxprune.gates.config import MIN_EVAL_SAMPLES
from onnxprune.lazydata import iter_batches
from onnxprune.runtime.session import (ModelLike, RuntimeSession, create_session, numpy_dtype,
                                       static_batch)


def validate_models(
    original_model: ModelLike,
    pruned_model: ModelLike,
    dataset: Dataset,
    provider: str = "auto",
    batch_size: int = 32,
    max_accuracy_drop: float | None = None,
    min_agreement: float | None = None,
    threads: int | None = None,
    names: tuple[str, str] | None = None,
    min_samples: int = MIN_EVAL_SAMPLES,
    allow_small_eval: bool = False,
    synthetic: bool = False,
    workers: int = 0,
    progress=None,
    memory_arena: bool = True,
) -> dict:
    """Run both models on ``dataset`` and compare them; see the module docstring for the keys.

    The samples stream in batches (decoded once, by ``workers`` threads ahead of use, and run
    through both models); only the top-1 classes and running error sums are kept, so memory
    does not grow with the dataset. ``progress(samples done, samples)`` follows the batches;
    ``memory_arena=False``: sessions without ORT's arena (see ``create_session``)."""
    _check_thresholds(max_accuracy_drop, min_agreement)
    names = names or (None, None)
    original = create_session(original_model, provider, threads, names[0], memory_arena)
    pruned = create_session(pruned_model, provider, threads, names[1], memory_arena)
    check_io_compatible(original, pruned)
    out_names = original.output_names()
    stats = [ErrorStats() for _ in out_names]
    tops: tuple[list, list] | None = ([], [])
    done = 0
    for outs_a, outs_b in _stream(original, pruned, dataset.x, batch_size, workers):
        done += len(outs_a[0]) if outs_a and outs_a[0].ndim else 0
        if progress is not None:
            progress(min(done, len(dataset)), len(dataset))
        for name, stat, a, b in zip(out_names, stats, outs_a, outs_b):
            if a.shape != b.shape:
                raise OnnxPruneError(
                    f"output '{name}' has shape {list(a.shape)} in the original but "
                    f"{list(b.shape)} in the pruned model (one batch)")
            stat.add(a, b)
        if tops is not None and looks_like_logits(outs_a[0]) and looks_like_logits(outs_b[0]):
            tops[0].append(np.argmax(outs_a[0], axis=1))
            tops[1].append(np.argmax(outs_b[0], axis=1))
        else:
            tops = None
    result = {
        "original": original.name,
        "pruned": pruned.name,
        "samples": len(dataset),
        "provider": original.provider if original.provider == pruned.provider
        else f"{original.provider} / {pruned.provider}",
    }
    result.update(_classification(tops, dataset.y))
    result["outputs"] = {name: stat.result() for name, stat in zip(out_names, stats)}
    result["thresholds"] = {"max_accuracy_drop": max_accuracy_drop, "min_agreement": min_agreement}
    failures = _threshold_failures(result, max_accuracy_drop, min_agreement)
    result["evidence"] = evidence(result, min_samples, synthetic)
    failures += _evidence_failures(result["evidence"], result["thresholds"], allow_small_eval)
    result["passed"] = not failures
    result["failures"] = failures
    return result


def _runner(rs: RuntimeSession):
    """A function running one batch (any size) through a one-input session; a model with a
    static batch size gets batches of exactly that size (the last padded with copies of its
    final sample, the padding dropped from the outputs); scalar outputs become one per run."""
    inputs = rs.session.get_inputs()
    if len(inputs) != 1:
        raise OnnxPruneError(f"{rs.name}: has {len(inputs)} inputs; data-driven runs need "
                             f"exactly one")
    name, dtype, fixed = inputs[0].name, numpy_dtype(inputs[0].type), static_batch(inputs[0].shape)

    def run_one(part: np.ndarray) -> list[np.ndarray]:
        real = len(part)
        if fixed and real < fixed:
            part = np.concatenate([part, np.repeat(part[-1:], fixed - real, axis=0)])
        try:
            outs = rs.session.run(None, {name: part})
        except Exception as exc:
            reason = (" ".join(str(exc).split()) or type(exc).__name__)[:300]
            raise OnnxPruneError(f"{rs.name}: inference failed ({reason})") from None
        outs = [np.reshape(o, (1,)) if o.ndim == 0 else o for o in outs]
        return [o[:real] if fixed and o.shape[0] == fixed else o for o in outs]

    def run(batch: np.ndarray) -> list[np.ndarray]:
        batch = batch.astype(dtype, copy=False)
        step = fixed or len(batch)
        parts = [run_one(batch[i:i + step]) for i in range(0, len(batch), step)]
        return parts[0] if len(parts) == 1 else [np.concatenate(o) for o in zip(*parts)]

    return run, fixed


def _stream(original: RuntimeSession, pruned: RuntimeSession, x, batch_size: int, workers: int):
    """(original outputs, pruned outputs) per batch of ``x``, each batch decoded once."""
    if batch_size < 1:
        raise OnnxPruneError(f"batch size must be at least 1, got {batch_size}")
    run_a, fixed_a = _runner(original)
    run_b, fixed_b = _runner(pruned)
    step = fixed_a or fixed_b or batch_size
    for _, batch in iter_batches(x, step, workers):
        yield run_a(batch), run_b(batch)


def _check_thresholds(max_accuracy_drop, min_agreement) -> None:
    if min_agreement is not None and not (0.0 <= min_agreement <= 1.0):
        raise OnnxPruneError(
            f"--min-agreement is a fraction between 0 and 1, got {min_agreement} "
            f"(e.g. 0.99 for 99%)"
        )
    if max_accuracy_drop is not None and not np.isfinite(max_accuracy_drop):
        raise OnnxPruneError(f"--max-accuracy-drop must be a number of points, got {max_accuracy_drop}")


def check_io_compatible(a: RuntimeSession, b: RuntimeSession) -> None:
    """Same input/output names, element types and ranks, or a one-line error (exit 2)."""
    for kind, left, right in (
        ("input", a.session.get_inputs(), b.session.get_inputs()),
        ("output", a.session.get_outputs(), b.session.get_outputs()),
    ):
        names_a, names_b = [v.name for v in left], [v.name for v in right]
        if names_a != names_b:
            raise OnnxPruneError(
                f"{kind} names differ: original {names_a}, pruned {names_b}"
            )
        for va, vb in zip(left, right):
            if va.type != vb.type:
                raise OnnxPruneError(
                    f"{kind} '{va.name}' has type {va.type} in the original but {vb.type} in the pruned model"
                )
            if len(va.shape or []) != len(vb.shape or []):
                raise OnnxPruneError(
                    f"{kind} '{va.name}' has rank {len(va.shape or [])} in the original but "
                    f"{len(vb.shape or [])} in the pruned model"
                )


def looks_like_logits(output: np.ndarray) -> bool:
    """A ``[N, K]`` array with K > 1 is taken for class scores."""
    return output.ndim == 2 and output.shape[1] > 1


def _classification(tops, labels: np.ndarray | None) -> dict:
    """Accuracy and agreement from the per-batch top-1 classes (None: not class logits)."""
    out = {"accuracy_original": None, "accuracy_pruned": None, "accuracy_drop": None, "agreement": None}
    if tops is None or not tops[0]:
        return out
    top_a, top_b = np.concatenate(tops[0]), np.concatenate(tops[1])
    out["agreement"] = float(np.mean(top_a == top_b))
    if labels is not None:
        acc_a = 100.0 * float(np.mean(top_a == labels))
        acc_b = 100.0 * float(np.mean(top_b == labels))
        out.update(accuracy_original=acc_a, accuracy_pruned=acc_b, accuracy_drop=acc_a - acc_b)
    return out


class ErrorStats:
    """``error_stats`` accumulated batch by batch (float64 running sums)."""

    def __init__(self):
        self.count, self.max_abs, self.sum_abs, self.peak = 0, 0.0, 0.0, 0.0
        self.dot, self.norm_a, self.norm_b = 0.0, 0.0, 0.0

    def add(self, original: np.ndarray, pruned: np.ndarray) -> None:
        a = np.asarray(original, dtype=np.float64).ravel()
        b = np.asarray(pruned, dtype=np.float64).ravel()
        if a.size == 0:
            return
        diff = np.abs(a - b)
        self.count += a.size
        self.max_abs = float(np.max([self.max_abs, diff.max()]))  # NaN propagates
        self.sum_abs += float(diff.sum())
        self.peak = float(np.max([self.peak, np.abs(a).max()]))
        self.dot += float(np.dot(a, b))
        self.norm_a += float(np.dot(a, a))
        self.norm_b += float(np.dot(b, b))

    def result(self) -> dict:
        if self.count == 0:
            return {"max_abs": 0.0, "mean_abs": 0.0, "cosine": 1.0, "rel_max_abs": 0.0}
        norm_a, norm_b = np.sqrt(self.norm_a), np.sqrt(self.norm_b)
        if norm_a == 0.0 and norm_b == 0.0:
            cosine = 1.0
        elif norm_a == 0.0 or norm_b == 0.0:
            cosine = 0.0
        else:
            cosine = float(self.dot / (norm_a * norm_b))
        if self.peak > 0:
            rel = self.max_abs / self.peak
        else:
            rel = 0.0 if self.max_abs == 0.0 else None
        return {
            "max_abs": _finite(self.max_abs),
            "mean_abs": _finite(self.sum_abs / self.count),
            "cosine": _finite(cosine),
            "rel_max_abs": _finite(rel),
        }


def error_stats(original: np.ndarray, pruned: np.ndarray) -> dict:
    """max_abs, mean_abs, cosine similarity and relative max abs of ``pruned`` vs ``original``."""
    stats = ErrorStats()
    stats.add(original, pruned)
    return stats.result()


def _finite(value: float | None) -> float | None:
    return value if value is not None and np.isfinite(value) else None


def _threshold_failures(result: dict, max_accuracy_drop, min_agreement) -> list[str]:
    failures = []
    if max_accuracy_drop is not None:
        drop = result["accuracy_drop"]
        if drop is None:
            raise OnnxPruneError(
                "--max-accuracy-drop needs labels ('y' in the .npz, or class sub-folders) and a "
                "first output of class logits [N, K]"
            )
        if drop > max_accuracy_drop:
            failures.append(
                f"accuracy drop {drop:.2f} points exceeds --max-accuracy-drop {max_accuracy_drop} "
                f"by {drop - max_accuracy_drop:.2f} points"
            )
    if min_agreement is not None:
        agreement = result["agreement"]
        if agreement is None:
            raise OnnxPruneError("--min-agreement needs a first output of class logits [N, K]")
        if agreement < min_agreement:
            failures.append(
                f"top-1 agreement {agreement:.4f} is below --min-agreement {min_agreement} "
                f"by {min_agreement - agreement:.4f}"
            )
    return failures


def wilson_interval(fraction: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion measured on ``n`` samples."""
    if n <= 0:
        return (0.0, 1.0)
    denom = 1.0 + z * z / n
    centre = (fraction + z * z / (2 * n)) / denom
    half = z * np.sqrt(fraction * (1 - fraction) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, float(centre - half)), min(1.0, float(centre + half)))


def evidence(result: dict, min_samples: int, synthetic: bool) -> dict:
    """How much the figures of ``result`` can be trusted: sample count and 95% intervals."""
    n = result["samples"]
    out = {"samples": n, "min_samples": min_samples, "small": n < min_samples,
           "synthetic": synthetic, "agreement_ci": None, "accuracy_pruned_ci": None}
    if result.get("agreement") is not None:
        out["agreement_ci"] = wilson_interval(result["agreement"], n)
    if result.get("accuracy_pruned") is not None:
        low, high = wilson_interval(result["accuracy_pruned"] / 100.0, n)
        out["accuracy_pruned_ci"] = (100.0 * low, 100.0 * high)
    return out


def _evidence_failures(ev: dict, thresholds: dict, allow_small: bool) -> list[str]:
    """Thresholds fail closed on synthetic inputs, and on too few samples unless allowed."""
    wanted = [f"--{k.replace('_', '-')}" for k, v in thresholds.items() if v is not None]
    if not wanted:
        return []
    if ev["synthetic"]:
        return [f"{' and '.join(wanted)} cannot pass on synthetic inputs (data-free mode): "
                f"give --eval-data with real samples"]
    if ev["small"] and not allow_small:
        ci = ev["agreement_ci"]
        spread = f" (95% CI of agreement {ci[0]:.2f}..{ci[1]:.2f})" if ci else ""
        return [f"only {ev['samples']} evaluation samples{spread}, fewer than "
                f"{ev['min_samples']}: too few for {' and '.join(wanted)}; give more data, "
                f"--eval-data, or --allow-small-eval"]
    return []


def _fmt(value, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


def format_validation(result: dict) -> str:
    """Human-readable report of ``validate_models``' result."""
    lines = [
        f"original : {result['original']}",
        f"pruned   : {result['pruned']}",
        f"samples  : {result['samples']}   provider: {result['provider']}",
    ]
    if result["accuracy_original"] is not None:
        lines.append(
            f"accuracy : {result['accuracy_original']:.2f}% -> {result['accuracy_pruned']:.2f}% "
            f"(drop {result['accuracy_drop']:.2f} points)"
        )
    if result["agreement"] is not None:
        lines.append(f"agreement: {100 * result['agreement']:.2f}% top-1")
    ev = result.get("evidence") or {}
    if ev.get("synthetic"):
        lines.append("evidence : synthetic inputs (data-free): not a measure of accuracy")
    elif ev.get("small"):
        ci = ev.get("agreement_ci")
        lines.append(f"evidence : only {ev['samples']} samples" + (
            f"; 95% CI of agreement {100 * ci[0]:.1f}%..{100 * ci[1]:.1f}%" if ci else ""))
    width = max([len("output")] + [len(n) for n in result["outputs"]])
    lines.append("")
    lines.append(f"{'output':<{width}}  {'max_abs':>10}  {'mean_abs':>10}  {'cosine':>9}  {'rel_max_abs':>11}")
    for name, s in result["outputs"].items():
        lines.append(
            f"{name:<{width}}  {_fmt(s['max_abs'], '10.3g'):>10}  {_fmt(s['mean_abs'], '10.3g'):>10}  "
            f"{_fmt(s['cosine'], '9.6f'):>9}  {_fmt(s['rel_max_abs'], '11.3g'):>11}"
        )
    thresholds = {k: v for k, v in result["thresholds"].items() if v is not None}
    if thresholds:
        lines.append("")
        verdict = "PASSED" if result["passed"] else "FAILED"
        lines.append(f"{verdict}: " + (", ".join(result["failures"]) or
                                       ", ".join(f"{k}={v:g}" for k, v in thresholds.items())))
    return "\n".join(lines)
