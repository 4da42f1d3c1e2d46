"""The report's charts, each an inline SVG whose data points are ``<g id="{chart}-{series}-{i}">``
elements with a hover tooltip (an SVG ``<title>``)."""

from __future__ import annotations

from onnxprune.htmlreport.svg import COLORS, figure, short_name, to_svg
from onnxprune.report import human

_MAX_LABELS = 40  # more bars than this: tick labels on every k-th bar only


def _width(n: int) -> float:
    return min(max(6.0, 0.42 * n + 2.0), 14.0)


def _ticks(ax, labels: list[str]) -> None:
    step = max(1, -(-len(labels) // _MAX_LABELS))
    ax.set_xticks(range(0, len(labels), step))
    ax.set_xticklabels(labels[::step], rotation=55, ha="right", fontsize=7)
    ax.set_xlim(-0.6, len(labels) - 0.4)


def _paired_bars(ax, before, after, series: tuple[str, str], tips: dict, labels, fmt) -> None:
    """A light 'before' bar with a dark 'after' bar drawn inside it, one pair per label."""
    x = range(len(before))
    wide = ax.bar(x, before, width=0.8, color=COLORS["before"], label=series[0])
    narrow = ax.bar(x, after, width=0.5, color=COLORS["after"], label=series[1])
    for i, (bar_b, bar_a) in enumerate(zip(wide, narrow)):
        bar_b.set_gid(f"{series[0]}-{i}")
        bar_a.set_gid(f"{series[1]}-{i}")
        tips[f"{series[0]}-{i}"] = f"{labels[i]}: {series[0]} {fmt(before[i])}"
        tips[f"{series[1]}-{i}"] = f"{labels[i]}: {series[1]} {fmt(after[i])} of {fmt(before[i])}"


def channels_chart(groups: list[dict]) -> str:
    """Kept vs total channels of every channel group, in network order."""
    labels = [short_name(g.get("id", i)) for i, g in enumerate(groups)]
    total = [int(g.get("total", 0)) for g in groups]
    kept = [int(g.get("kept", g.get("total", 0))) for g in groups]
    tips: dict[str, str] = {}
    with figure(_width(len(groups)), 3.6) as fig:
        ax = fig.add_subplot()
        _paired_bars(ax, total, kept, ("total", "kept"), tips, labels, str)
        _ticks(ax, labels)
        ax.set_ylabel("channels")
        ax.set_title("Channels kept per group (network order)")
        ax.legend(frameon=False, fontsize=8)
        return to_svg(fig, "chart-channels", "kept and total channels per group", tips)


def macs_chart(rows: list[tuple[str, int, int]]) -> str:
    """MACs of every MAC node before and after pruning, in network order."""
    labels = [short_name(node) for node, _, _ in rows]
    before = [b for _, b, _ in rows]
    after = [a for _, _, a in rows]
    tips: dict[str, str] = {}
    with figure(_width(len(rows)), 3.6) as fig:
        ax = fig.add_subplot()
        _paired_bars(ax, before, after, ("before", "after"), tips, labels, human)
        _ticks(ax, labels)
        ax.set_ylabel("MACs (batch 1)")
        ax.yaxis.set_major_formatter(lambda v, _: human(v))
        ax.set_title("MACs per layer before and after pruning")
        ax.legend(frameon=False, fontsize=8)
        return to_svg(fig, "chart-macs", "MACs per layer before and after pruning", tips)


def latency_chart(bench: dict) -> str:
    """p50 latency with p90 and p99 marks per batch size and model, then the p50 speedup of
    each batch size next to the MAC ratio."""
    models = bench["models"]
    batches = list(models[0]["latency"])
    tips: dict[str, str] = {}
    with figure(2.4 * (len(batches) + 1) + 1.0, 3.2) as fig:
        axes = fig.subplots(1, len(batches) + 1)
        for ax, batch in zip(axes, batches):
            _latency_panel(ax, models, batch, tips)
        _speedup_panel(axes[-1], models[-1], batches, tips)
        return to_svg(fig, "chart-latency", "latency per batch size and speedup", tips)


def _latency_panel(ax, models: list[dict], batch: str, tips: dict) -> None:
    # a p99 far above the p90 (a hiccup of the machine) would flatten the bars: such a mark
    # sits at the top edge as a triangle, with its value written beside it
    top = 1.3 * max(m["latency"][batch]["p90_ms"] for m in models)
    for j, model in enumerate(models):
        lat = model["latency"][batch]
        color = COLORS["before"] if j == 0 else COLORS["after"]
        (bar,) = ax.bar([j], [lat["p50_ms"]], width=0.6, color=color)
        bar.set_gid(f"p50-m{j}-b{batch}")
        tips[f"p50-m{j}-b{batch}"] = f"{model['name']}, batch {batch}: p50 {lat['p50_ms']:.3f} ms"
        for key, marker in (("p90_ms", "_"), ("p99_ms", "x")):
            value = lat[key]
            if value > top:
                marker, value = "^", top * 0.97
                ax.annotate(f"{lat[key]:.3g}", (j, value), xytext=(6, -3),
                            textcoords="offset points", fontsize=7)
            (point,) = ax.plot([j], [value], marker=marker, color="black", markersize=8,
                               linestyle="none")
            gid = f"{key[:3]}-m{j}-b{batch}"
            point.set_gid(gid)
            tips[gid] = f"{model['name']}, batch {batch}: {key[:3]} {lat[key]:.3f} ms"
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels([short_name(m["name"])[-18:] for m in models], fontsize=7)
    ax.set_ylim(0, top)
    ax.set_title(f"batch {batch}: p50 (bar), p90 –, p99 ×", fontsize=8)
    ax.set_ylabel("ms")


def _speedup_panel(ax, model: dict, batches: list[str], tips: dict) -> None:
    for i, batch in enumerate(batches):
        value = (model.get("speedup") or {}).get(batch, {}).get("p50") or 0.0
        (bar,) = ax.bar([i], [value], width=0.6, color=COLORS["after"])
        bar.set_gid(f"speedup-b{batch}")
        tips[f"speedup-b{batch}"] = f"batch {batch}: p50 speedup {value:.2f}×"
    if model.get("mac_ratio"):
        line = ax.axhline(model["mac_ratio"], color=COLORS["line"], linestyle="--",
                          label=f"MAC ratio {model['mac_ratio']:.2f}×")
        line.set_gid("mac-ratio")
        tips["mac-ratio"] = f"MAC ratio (original / pruned MACs) {model['mac_ratio']:.2f}×"
        ax.legend(frameon=False, fontsize=7, loc="lower right")
    ax.axhline(1.0, color="#888888", linewidth=0.6)
    ax.set_xticks(range(len(batches)))
    ax.set_xticklabels([f"batch {b}" for b in batches], fontsize=7)
    ax.set_title(f"{short_name(model['name'])[-18:]}: p50 speedup", fontsize=8)


def profile_ops_chart(comparison: dict) -> str:
    """Microseconds per run of each op type (and outside the kernels), original vs pruned."""
    rows = sorted(comparison["ops"], key=lambda r: -max(r["original_us"], r["pruned_us"]))
    labels = [r["op"] for r in rows]
    tips: dict[str, str] = {}
    with figure(7.0, 0.32 * len(rows) + 1.3) as fig:
        ax = fig.add_subplot()
        y = list(range(len(rows)))
        for offset, key, color in ((-0.2, "original", COLORS["before"]),
                                   (0.2, "pruned", COLORS["after"])):
            bars = ax.barh([v + offset for v in y], [r[f"{key}_us"] for r in rows],
                           height=0.4, color=color, label=key)
            for i, bar in enumerate(bars):
                bar.set_gid(f"{key}-{i}")
                tips[f"{key}-{i}"] = f"{labels[i]}: {key} {rows[i][f'{key}_us']:.1f} µs per run"
        ax.set_yticks(y)
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("µs per run (median)")
        ax.set_title("Time per op type")
        ax.legend(frameon=False, fontsize=8, loc="lower right")
        return to_svg(fig, "chart-profile-ops", "time per op type, original and pruned", tips)


def profile_layers_chart(comparison: dict) -> str:
    """Per layer with MACs: the pruned/original time ratio (red where it is worse than the MAC
    ratio) and the MAC ratio (a diamond)."""
    rows = [r for r in comparison["layers"] if r["mac_ratio"] is not None and r["time_ratio"]]
    labels = [short_name(r["layer"]) for r in rows]
    tips: dict[str, str] = {}
    with figure(_width(len(rows)), 3.6) as fig:
        ax = fig.add_subplot()
        bars = ax.bar(range(len(rows)), [r["time_ratio"] for r in rows], width=0.6,
                      color=[COLORS["bad"] if r["worse_than_macs"] else COLORS["after"]
                             for r in rows])
        for i, (bar, row) in enumerate(zip(bars, rows)):
            (point,) = ax.plot([i], [row["mac_ratio"]], marker="D", color="black",
                               markersize=4, linestyle="none")
            bar.set_gid(f"time-{i}")
            point.set_gid(f"mac-{i}")
            tips[f"time-{i}"] = (f"{labels[i]}: time {row['original_us']:.1f} → "
                                 f"{row['pruned_us']:.1f} µs ({100 * row['time_ratio']:.0f}%)")
            tips[f"mac-{i}"] = f"{labels[i]}: MACs kept {100 * row['mac_ratio']:.0f}%"
        ax.axhline(1.0, color="#888888", linewidth=0.6)
        _ticks(ax, labels)
        ax.set_ylabel("pruned / original")
        ax.set_title("Time ratio per layer (bar; red: worse than its MAC ratio ◆)")
        return to_svg(fig, "chart-profile-layers", "time ratio and MAC ratio per layer", tips)
