"""The "where the time went" section: the per-node profile of ``runtime.profile.profile_models``
grouped by op type and by layer, and the ops that account for the gap between the measured
speedup and the MAC ratio."""

from __future__ import annotations

from onnxprune.htmlreport import charts
from onnxprune.htmlreport.facts import frac, is_number, times
from onnxprune.htmlreport.html import bullet_list, details, figure, paragraph, section, table
from onnxprune.htmlreport.svg import short_name

_TOP_LAYERS = 5
_TOP_CHANGES = 10


def _us(value) -> str:
    return f"{value:.1f}" if is_number(value) else "–"


def _ratio(value) -> str:
    return f"{100 * value:.0f}%" if is_number(value) else "–"


def profile_section(profile: dict | None, report: dict | None = None) -> str:
    title = "Where the time went"
    if not profile or not profile.get("comparisons"):
        return section("profile", title, paragraph(
            "No per-node profile: it needs the original and the pruned model files "
            "(build_report_inputs profiles them when they exist)."))
    comparison = profile["comparisons"][0]
    return section("profile", title, _intro(profile, comparison, report),
                   _gap(comparison), _layer_findings(comparison),
                   figure(charts.profile_ops_chart(comparison),
                          "Median microseconds per run of each op type as onnxruntime ran it "
                          "(after its fusions), and outside the kernels."),
                   _ops_table(comparison),
                   _layers_part(comparison), _nodes_table(comparison))


def _intro(profile: dict, comparison: dict, report: dict | None) -> str:
    text = (f"onnxruntime {profile.get('onnxruntime', '?')} profile on "
            f"{profile.get('provider', '?')} at batch {profile.get('batch', '?')}: median of "
            f"{profile.get('runs', '?')} interleaved runs after {profile.get('warmup', '?')} "
            f"warm-up runs. Profiling adds its own cost, so these times run a little above the "
            f"benchmark's.")
    measured = _bench_speedup(report, profile.get("batch"))
    if measured is not None:
        text += f" The benchmark measured {times(measured)} at this batch size."
    return paragraph(text)


def _bench_speedup(report: dict | None, batch) -> float | None:
    models = ((report or {}).get("benchmark") or {}).get("models") or []
    if len(models) < 2:
        return None
    value = (models[-1].get("speedup") or {}).get(str(batch), {}).get("p50")
    return value if is_number(value) else None


def _gap(comparison: dict) -> str:
    gap = comparison["gap"]
    head = (f"Speedup in the profile {times(gap['speedup'])} against {times(gap['mac_speedup'])} "
            f"from the MAC ratio (MACs kept: {frac(comparison['mac_fraction'])}).")
    if not gap["culprits"]:
        return paragraph(head + " The pruned model is as fast as its MACs predict, or faster: "
                         "there is no gap to explain.", "gap")
    head += (f" The pruned model spends {gap['gap_us']:.1f} µs per run more than its MACs "
             f"predict; these ops account for it:")
    items = [f"{c['op']}: {100 * c['share_of_gap']:.0f}% of the gap ({c['excess_us']:.1f} µs) "
             f"— {c['reason']}" for c in gap["culprits"]]
    return paragraph(head, "gap") + f'<div id="gap-culprits">{bullet_list(items)}</div>'


def _layer_findings(comparison: dict) -> str:
    worse = sorted((r for r in comparison["layers"] if r["worse_than_macs"]),
                   key=lambda r: -r["excess_us"])
    new = [n["node"] for n in comparison["nodes"] if not n["original_us"] and n["pruned_us"]]
    parts = []
    if worse:
        items = [f"{short_name(r['layer'])}: time {_ratio(r['time_ratio'])} of the original, MACs "
                 f"{_ratio(r['mac_ratio'])} ({r['excess_us']:.1f} µs above its MAC ratio)"
                 for r in worse[:_TOP_LAYERS]]
        parts.append(paragraph(f"{len(worse)} layer(s) run slower than their MAC ratio (by more "
                               f"than {100 * comparison.get('margin', 0):.0f}%); the largest:"))
        parts.append(bullet_list(items))
    changes = comparison.get("kernel_changes") or []
    if changes:
        items = [f"{short_name(c['layer'])}: {c['original_op']} → {c['pruned_op']}"
                 for c in changes[:_TOP_CHANGES]]
        more = len(changes) - len(items)
        parts.append(paragraph(f"{len(changes)} layer(s) run on another onnxruntime kernel in "
                               f"the pruned model:") + bullet_list(
            items + ([f"and {more} more"] if more > 0 else [])))
    if new:
        parts.append(paragraph("Nodes that onnxruntime runs only in the pruned model: "
                               + ", ".join(new) + "."))
    return "\n".join(parts)


def _ops_table(comparison: dict) -> str:
    rows = [[r["op"], _us(r["original_us"]), _us(r["pruned_us"]), _ratio(r["time_ratio"]),
             _ratio(r["mac_ratio"]), frac(r["share_original"], 1), frac(r["share_pruned"], 1),
             _us(r["excess_us"])] for r in comparison["ops"]]
    culprits = {c["op"] for c in comparison["gap"]["culprits"]}
    return table(["op type", "original µs", "pruned µs", "time ratio", "MAC ratio",
                  "share before", "share after", "µs above MAC ratio"], rows,
                 row_classes=["worse" if r["op"] in culprits else "" for r in comparison["ops"]],
                 table_id="profile-ops-table")


def _layers_part(comparison: dict) -> str:
    layers = comparison["layers"]
    if not layers:
        return ""
    chart = ""
    if any(r["mac_ratio"] is not None and r["time_ratio"] for r in layers):
        chart = figure(charts.profile_layers_chart(comparison),
                       "Per layer with MACs: pruned/original time (bar, red where worse than "
                       "its MAC ratio) and pruned/original MACs (diamond).")
    rows = [[short_name(r["layer"]), _us(r["original_us"]), _us(r["pruned_us"]),
             _ratio(r["time_ratio"]), _ratio(r["mac_ratio"]), _us(r["excess_us"])]
            for r in layers]
    return chart + table(["layer", "original µs", "pruned µs", "time ratio", "MAC ratio",
                          "µs above MAC ratio"], rows,
                         row_classes=["worse" if r["worse_than_macs"] else "" for r in layers],
                         table_id="profile-layers-table")


def _nodes_table(comparison: dict) -> str:
    rows = [[n["node"], n["op"], n["layer"] or "(inserted by onnxruntime)",
             _us(n["original_us"]), _us(n["pruned_us"])] for n in comparison["nodes"]]
    return details(f"{len(rows)} profiled nodes", table(
        ["node as onnxruntime ran it", "op", "layer", "original µs", "pruned µs"], rows,
        table_id="profile-nodes-table", numeric_from=3))
