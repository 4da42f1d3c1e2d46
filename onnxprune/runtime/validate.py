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
from onnxprune.runtime.session import ModelLike, RuntimeSession, create_session, run_batches


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
) -> dict:
    """Run both models on ``dataset`` and compare them; see the module docstring for the keys."""
    _check_thresholds(max_accuracy_drop, min_agreement)
    names = names or (None, None)
    original = create_session(original_model, provider, threads, names[0])
    pruned = create_session(pruned_model, provider, threads, names[1])
    check_io_compatible(original, pruned)
    outs_a = run_batches(original, dataset.x, batch_size)
    outs_b = run_batches(pruned, dataset.x, batch_size)
    result = {
        "original": original.name,
        "pruned": pruned.name,
        "samples": len(dataset),
        "provider": original.provider if original.provider == pruned.provider
        else f"{original.provider} / {pruned.provider}",
    }
    result.update(_classification(outs_a[0], outs_b[0], dataset.y))
    out_names = original.output_names()
    result["outputs"] = {}
    for name, a, b in zip(out_names, outs_a, outs_b):
        if a.shape != b.shape:
            raise OnnxPruneError(
                f"output '{name}' has shape {list(a.shape)} in the original but {list(b.shape)} "
                f"in the pruned model"
            )
        result["outputs"][name] = error_stats(a, b)
    result["thresholds"] = {"max_accuracy_drop": max_accuracy_drop, "min_agreement": min_agreement}
    failures = _threshold_failures(result, max_accuracy_drop, min_agreement)
    result["evidence"] = evidence(result, min_samples, synthetic)
    failures += _evidence_failures(result["evidence"], result["thresholds"], allow_small_eval)
    result["passed"] = not failures
    result["failures"] = failures
    return result


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


def _classification(a: np.ndarray, b: np.ndarray, labels: np.ndarray | None) -> dict:
    out = {"accuracy_original": None, "accuracy_pruned": None, "accuracy_drop": None, "agreement": None}
    if not (looks_like_logits(a) and looks_like_logits(b)):
        return out
    top_a, top_b = np.argmax(a, axis=1), np.argmax(b, axis=1)
    out["agreement"] = float(np.mean(top_a == top_b))
    if labels is not None:
        acc_a = 100.0 * float(np.mean(top_a == labels))
        acc_b = 100.0 * float(np.mean(top_b == labels))
        out.update(accuracy_original=acc_a, accuracy_pruned=acc_b, accuracy_drop=acc_a - acc_b)
    return out


def error_stats(original: np.ndarray, pruned: np.ndarray) -> dict:
    """max_abs, mean_abs, cosine similarity and relative max abs of ``pruned`` vs ``original``."""
    a = np.asarray(original, dtype=np.float64).ravel()
    b = np.asarray(pruned, dtype=np.float64).ravel()
    if a.size == 0:
        return {"max_abs": 0.0, "mean_abs": 0.0, "cosine": 1.0, "rel_max_abs": 0.0}
    diff = np.abs(a - b)
    max_abs = float(diff.max())
    peak = float(np.abs(a).max())
    norm_a, norm_b = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if norm_a == 0.0 and norm_b == 0.0:
        cosine = 1.0
    elif norm_a == 0.0 or norm_b == 0.0:
        cosine = 0.0
    else:
        cosine = float(np.dot(a, b) / (norm_a * norm_b))
    if peak > 0:
        rel = max_abs / peak
    else:
        rel = 0.0 if max_abs == 0.0 else None
    return {
        "max_abs": _finite(max_abs),
        "mean_abs": _finite(float(diff.mean())),
        "cosine": _finite(cosine),
        "rel_max_abs": _finite(rel),
    }


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
