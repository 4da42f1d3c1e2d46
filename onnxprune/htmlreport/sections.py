"""The report's sections except the profile: summary, layers, barriers, latency, settings.

Each takes the report (and the analyses where it needs them) and returns an HTML fragment; a
section whose data is absent says what is missing instead of failing.
"""

from __future__ import annotations

from onnxprune.htmlreport import charts
from onnxprune.htmlreport.facts import (SHOWN_KEYS, error_rows, frac, info_rows, is_number, ms,
                                        summary_rows, times)
from onnxprune.htmlreport.html import (as_json, bullet_list, details, figure, key_values,
                                       paragraph, section, table)
from onnxprune.report import human


def summary_section(report: dict) -> str:
    rows = summary_rows(report)
    parts = [key_values(info_rows(report))]
    if rows:
        parts.append(table(["", "original", "pruned", "change"], rows, table_id="summary-table"))
    errors = error_rows(report)
    if errors:
        parts.append("<h3>Output error of the pruned model</h3>")
        parts.append(table(["output", "max abs", "mean abs", "cosine", "relative max abs"],
                           errors, table_id="error-table"))
    validation = report.get("validation") or {}
    if validation.get("failures"):
        parts.append(paragraph("Failed: " + "; ".join(map(str, validation["failures"])), "bad"))
    if report.get("notes"):
        parts.append("<h3>Notes</h3>" + bullet_list([str(n) for n in report["notes"]]))
    if isinstance(report.get("evaluation"), dict):
        parts.append(details("Evaluation", key_values(
            [(str(k), str(v)) for k, v in report["evaluation"].items()])))
    return section("summary", "Summary", *parts)


def layers_section(report: dict, analysis: dict | None) -> str:
    parts = []
    groups = report.get("groups") or []
    if groups:
        parts.append(figure(charts.channels_chart(groups),
                            "Each channel group's total channels (light) and the channels kept "
                            "(dark), in network order."))
        parts.append(details(f"{len(groups)} channel groups", table(
            ["group", "kept", "total", "kept %", "prunable"],
            [[g.get("id"), g.get("kept"), g.get("total"),
              frac(g["kept"] / g["total"], 1) if g.get("total") else "–",
              "yes" if g.get("prunable", True) else "no"] for g in groups],
            table_id="groups-table")))
    rows = mac_rows(analysis)
    if rows:
        parts.append(figure(charts.macs_chart(rows),
                            "MACs of each Conv, ConvTranspose, Gemm and MatMul node before "
                            "(light) and after (dark) pruning, in network order."))
        parts.append(details(f"{len(rows)} layers with MACs", table(
            ["layer", "MACs before", "MACs after", "after / before"],
            [[node, f"{b:,}", f"{a:,}", frac(a / b, 1) if b else "–"] for node, b, a in rows],
            table_id="macs-table")))
    elif analysis is None:
        parts.append(paragraph("MACs per layer need the analyses of both models "
                               "(the model files named in the report were not available)."))
    if not parts:
        return ""
    return section("layers", "Layers", *parts)


def mac_rows(analysis: dict | None) -> list[tuple[str, int, int]]:
    """(node, MACs before, MACs after) for each MAC node of the original, in network order."""
    if not analysis or not analysis.get("original") or not analysis.get("pruned"):
        return []
    after = {r["node"]: r["macs"] for r in analysis["pruned"].get("macs_per_node", [])}
    return [(r["node"], int(r["macs"]), int(after.get(r["node"], 0)))
            for r in analysis["original"].get("macs_per_node", [])]


def barriers_section(report: dict, analysis: dict | None) -> str:
    original = (analysis or {}).get("original") or {}
    parts = []
    barriers = original.get("barriers")
    total, prunable = original.get("macs"), original.get("prunable_macs")
    if is_number(total) and is_number(prunable) and total:
        held = total - prunable
        parts.append(paragraph(
            f"Barriers and other unprunable channels hold back {human(held)} of {human(total)} "
            f"MACs ({frac(held / total)}): those MACs cannot shrink whatever the target." if held
            else f"No MAC is held back: all {human(total)} MACs sit in prunable channels.",
            "share"))
    if barriers:
        parts.append(table(["op", "node", "reason"],
                           [[b.get("op"), b.get("node"), b.get("reason")] for b in barriers],
                           table_id="barriers-table", numeric_from=3))
    elif barriers is not None:
        parts.append(paragraph("No barriers: no op blocks pruning of the channels it touches."))
    locked = [g for g in original.get("groups") or [] if not g.get("prunable", True)]
    if locked:
        parts.append("<h3>Groups that are never pruned</h3>" + table(
            ["group", "channels", "MACs", "reason"],
            [[g.get("id"), g.get("channels"), f"{g.get('macs', 0):,}", g.get("reason", "")]
             for g in locked], table_id="locked-groups-table", numeric_from=1))
    excluded = report.get("excluded")
    if excluded:
        parts.append("<h3>Groups excluded from pruning</h3>" + _records(excluded))
    if not parts:
        return section("barriers", "Barriers", paragraph(
            "The barriers need the analysis of the original model (its file was not available)."))
    return section("barriers", "Barriers", *parts)


def _records(value) -> str:
    """A list of dicts as a table of their keys; anything else as JSON."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        keys = list(dict.fromkeys(k for v in value for k in v))
        return table(keys, [[v.get(k, "") for k in keys] for v in value], numeric_from=len(keys))
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        return bullet_list([str(v) for v in value])
    return as_json(value)


def latency_section(report: dict) -> str:
    bench = report.get("benchmark")
    if not bench or len(bench.get("models") or []) < 1:
        return section("latency", "Latency", paragraph(
            "No benchmark in this report: run compress with --bench."))
    rows = []
    for batch in bench["models"][0].get("latency", {}):
        for model in bench["models"]:
            lat = model["latency"].get(batch, {})
            speed = (model.get("speedup") or {}).get(batch, {}).get("p50")
            rows.append([model.get("name"), batch, ms(lat.get("p50_ms")), ms(lat.get("p90_ms")),
                         ms(lat.get("p99_ms")), ms(lat.get("mean_ms")),
                         f"{lat['throughput']:.1f}" if is_number(lat.get("throughput")) else "–",
                         times(speed), times(model.get("mac_ratio"))])
    machine = bench.get("machine") or {}
    where = (f"{bench.get('provider', '?')}, {machine.get('cpu', '?')} "
             f"({machine.get('cpu_count', '?')} cores), "
             f"onnxruntime {bench.get('onnxruntime', '?')}")
    return section("latency", "Latency", paragraph(
        f"Measured in ONNX Runtime on {where}; runs interleaved after warm-up. The MAC ratio is "
        f"the speedup the MACs alone would predict."),
        figure(charts.latency_chart(bench), "Left: latency per batch size (a p99 far off the "
               "scale is a triangle at the top, labelled with its value). Right: measured p50 "
               "speedup per batch size against the MAC ratio (dashed)."),
        table(["model", "batch", "p50", "p90", "p99", "mean", "samples/s", "speedup p50",
               "MAC ratio"], rows, table_id="latency-table", numeric_from=1))


def settings_section(report: dict) -> str:
    parts = []
    if isinstance(report.get("settings"), dict):
        parts.append(details(f"All {len(report['settings'])} settings of the run", key_values(
            [(str(k), "" if v is None else str(v)) for k, v in report["settings"].items()])))
    if report.get("recalibration"):
        parts.append(details(f"Recalibration ({len(report['recalibration'])} layers)",
                             _records(report["recalibration"])))
    if report.get("training"):
        parts.append(details("Gate training", as_json(report["training"])))
    if is_number(report.get("threshold")):
        parts.append(paragraph(f"Selection threshold: {report['threshold']:.6g}"))
    other = {k: v for k, v in report.items() if k not in SHOWN_KEYS}
    for key, value in other.items():
        parts.append(details(str(key), _records(value) if isinstance(value, list)
                             else as_json(value)))
    return section("settings", "Settings", *parts) if parts else ""

