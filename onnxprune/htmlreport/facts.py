"""The summary figures of a ``compress`` report, as plain strings: shared by the HTML report and
the Markdown CI summary, so both always say the same thing. Every key is optional."""

from __future__ import annotations

from numbers import Real

from onnxprune.report import human

# Keys of the report that the summary, the sections or the settings table already show.
SHOWN_KEYS = frozenset({
    "model", "output", "method", "target", "macs_before", "macs_after", "macs_ratio",
    "params_before", "params_after", "groups", "task_loss", "recalibrated_convs",
    "recalibration", "threshold", "notes", "training", "settings", "validation",
    "accuracy_before", "accuracy_after", "benchmark", "seconds", "finetune", "evaluation",
    "excluded",
})
_FINETUNE_KEYS = ("accuracy_after_finetuning", "accuracy", "accuracy_after", "accuracy_pruned", "accuracy_finetuned",
                  "held_out_accuracy")


def is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def count(value) -> str:
    return human(value) if is_number(value) else "–"


def pct(value, digits: int = 2) -> str:
    """A value that already is a percentage (99.1 -> '99.10%')."""
    return f"{value:.{digits}f}%" if is_number(value) else "–"


def frac(value, digits: int = 2) -> str:
    """A 0..1 fraction as a percentage (0.496 -> '49.60%')."""
    return f"{100 * value:.{digits}f}%" if is_number(value) else "–"


def times(value) -> str:
    return f"{value:.2f}×" if is_number(value) else "–"


def ms(value) -> str:
    return f"{value:.3f} ms" if is_number(value) else "–"


def accuracies(report: dict) -> tuple:
    """(accuracy of the original, of the pruned model, after fine-tuning), percentages or None."""
    validation = report.get("validation") or {}
    before = report.get("accuracy_before", validation.get("accuracy_original"))
    after = report.get("accuracy_after", validation.get("accuracy_pruned"))
    return before, after, finetune_accuracy(report)


def finetune_accuracy(report: dict):
    """The accuracy after fine-tuning, wherever the report keeps it, or None."""
    for section in ("finetune", "fine_tuning"):
        value = report.get(section)
        if isinstance(value, dict):
            for key in _FINETUNE_KEYS:
                if is_number(value.get(key)):
                    return value[key]
        elif is_number(value):
            return value
    value = report.get("accuracy_finetuned")
    return value if is_number(value) else None


def _delta(before, after) -> str:
    if is_number(before) and is_number(after):
        return f"{after - before:+.2f} pts"
    return ""


def _ratio(before, after) -> str:
    if is_number(before) and is_number(after) and before:
        return f"{100 * after / before:.2f}%"
    return ""


def summary_rows(report: dict) -> list[tuple[str, str, str, str]]:
    """(what, original, pruned, change) rows: MACs, params, accuracy, agreement, latency."""
    rows = []
    if "macs_before" in report or "macs_after" in report:
        change = _ratio(report.get("macs_before"), report.get("macs_after"))
        if is_number(report.get("target")):
            change += f" (target {100 * report['target']:.1f}%)"
        rows.append(("MACs (batch 1)", count(report.get("macs_before")),
                     count(report.get("macs_after")), change.strip()))
    if "params_before" in report or "params_after" in report:
        rows.append(("Parameters", count(report.get("params_before")),
                     count(report.get("params_after")),
                     _ratio(report.get("params_before"), report.get("params_after"))))
    before, after, tuned = accuracies(report)
    data = (report.get("validation") or {}).get("data")
    label = f"Accuracy ({data})" if data else "Accuracy"
    if before is not None or after is not None:
        rows.append((label, pct(before), pct(after), _delta(before, after)))
    if tuned is not None:
        rows.append(("Accuracy after fine-tuning", pct(before), pct(tuned), _delta(before, tuned)))
    agreement = (report.get("validation") or {}).get("agreement")
    if is_number(agreement):
        rows.append(("Top-1 agreement with the original", "", frac(agreement), ""))
    rows.extend(latency_rows(report.get("benchmark")))
    return rows


def latency_rows(bench: dict | None) -> list[tuple[str, str, str, str]]:
    """One (what, original p50, pruned p50, speedup vs MAC ratio) row per batch size."""
    models = (bench or {}).get("models") or []
    if len(models) < 2:
        return []
    first, last = models[0], models[-1]
    rows = []
    for batch, latency in (last.get("latency") or {}).items():
        speed = (last.get("speedup") or {}).get(batch, {}).get("p50")
        change = times(speed)
        if is_number(last.get("mac_ratio")):
            change += f" (MAC ratio {times(last['mac_ratio'])})"
        rows.append((f"Latency p50, batch {batch}",
                     ms((first.get("latency") or {}).get(batch, {}).get("p50_ms")),
                     ms(latency.get("p50_ms")), change))
    return rows


def info_rows(report: dict) -> list[tuple[str, str]]:
    """(what, value) rows naming the run: model, output, method, target, loss, provider."""
    rows = []
    for key, label in (("model", "Model"), ("output", "Pruned model"), ("method", "Method"),
                       ("task_loss", "Task loss"), ("recalibrated_convs", "Recalibrated layers")):
        if report.get(key) is not None:
            rows.append((label, str(report[key])))
    if is_number(report.get("target")):
        rows.append(("MAC target", frac(report["target"], 1)))
    bench = report.get("benchmark") or {}
    if bench.get("provider"):
        machine = bench.get("machine") or {}
        where = ", ".join(str(machine[k]) for k in ("cpu", "gpu") if machine.get(k))
        rows.append(("Benchmark", f"{bench['provider']}" + (f" on {where}" if where else "")
                     + (f", onnxruntime {bench['onnxruntime']}" if bench.get("onnxruntime")
                        else "")))
    if is_number(report.get("seconds")):
        rows.append(("Run time", f"{report['seconds']:.1f} s"))
    return rows


def error_rows(report: dict) -> list[tuple[str, str, str, str, str]]:
    """(output, max abs, mean abs, cosine, relative max abs) per model output."""
    outputs = (report.get("validation") or {}).get("outputs") or {}
    fmt = lambda v: f"{v:.4g}" if is_number(v) else "–"  # noqa: E731
    return [(str(name), fmt(s.get("max_abs")), fmt(s.get("mean_abs")), fmt(s.get("cosine")),
             fmt(s.get("rel_max_abs"))) for name, s in outputs.items() if isinstance(s, dict)]
