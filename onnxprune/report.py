"""Human-readable tables for the CLI."""

from __future__ import annotations


def _table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    for row in cells:
        out.append("  ".join(c.rjust(w) if c.replace(".", "").replace("%", "").replace(",", "").isdigit()
                             else c.ljust(w) for c, w in zip(row, widths)))
    return "\n".join(out)


NAME_WIDTH = 48  # longer node and group names are shortened in tables (full in --json)


def short(name: str, width: int = NAME_WIDTH) -> str:
    """``name`` cut in the middle to at most ``width`` characters ('…' marks the cut)."""
    name = str(name)
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return name[:head] + "…" + name[len(name) - (width - 1 - head):]


def human(n: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def format_analysis(result: dict) -> str:
    """The human form of ``analyze``."""
    lines = [f"opset {result['opset']}, {result['nodes']} nodes"]
    for kind in ("inputs", "outputs"):
        for io in result[kind]:
            lines.append(f"{kind[:-1]:<7} {io['name']}: {io['dtype']} {io['shape']}")
    lines.append("ops     " + ", ".join(f"{k}×{v}" for k, v in result["op_counts"].items()))
    lines.append(f"params  {result['params']:,} ({human(result['params'])})")
    lines.append(f"MACs    {result['macs']:,} ({human(result['macs'])}) at batch 1")
    if "prunable_macs" in result and result["macs"]:
        share = 100.0 * result["prunable_macs"] / result["macs"]
        lines.append(f"prunable {share:.1f}% of MACs in {sum(g['prunable'] for g in result['groups'])}"
                     f" of {len(result['groups'])} channel groups")
    lines.append("")
    rows = [[short(r["node"]), r["op"], f"{r['macs']:,}"] for r in result["macs_per_node"]]
    lines.append(_table(["node", "op", "MACs"], rows))
    if result.get("groups"):
        lines.append("")
        rows = [[short(g["id"]), g["channels"], "yes" if g["prunable"] else "no",
                 f"{g['macs']:,}", g.get("reason", "")] for g in result["groups"]]
        lines.append(_table(["group", "channels", "prunable", "MACs", "reason"], rows))
    for note in result.get("notes") or []:
        lines.append(f"note    {note}")
    if result.get("nothing_prunable"):
        lines.append(f"nothing prunable: {result['nothing_prunable']}")
    if result.get("barriers"):
        lines.append("")
        rows = [[b["op"], short(b["node"]), b["reason"]] for b in result["barriers"]]
        lines.append(_table(["barrier op", "node", "reason"], rows))
    return "\n".join(lines)


def format_rows(rows: list[tuple[str, object]]) -> str:
    """A two-column summary table: names left-aligned to the widest, then the values."""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _pct(value) -> str:
    return "—" if value is None else f"{value:.2f}%"


def _epoch_text(epoch: dict) -> str:
    terms = ", ".join(f"{k} {epoch[k]:.4f}" for k in ("kd", "ce") if epoch.get(k))
    held = f"; held-out {epoch['accuracy']:.2f}%" if epoch.get("accuracy") is not None else ""
    return f"loss {epoch['loss']:.4f}" + (f" ({terms})" if terms else "") + \
        f", {epoch['steps']} steps{held}"


def finetune_rows(before: float | None, after_pruning: float | None, epochs: list[dict],
                  after_finetuning: float | None, steps: int | None = None) -> list[tuple]:
    """Summary rows of a fine-tuned run: the accuracy before pruning, after pruning, after each
    fine-tuning epoch (held-out data, in the torch executor; the epoch's mean loss terms) and
    after fine-tuning (ONNX Runtime), with the change against the model before pruning."""
    rows = []
    if before is not None:
        rows.append(("accuracy before pruning", _pct(before)))
    if after_pruning is not None:
        change = "" if before is None else f" ({after_pruning - before:+.2f} points)"
        rows.append(("accuracy after pruning", _pct(after_pruning) + change))
    for epoch in epochs:
        rows.append((f"fine-tuning epoch {epoch['epoch']}", _epoch_text(epoch)))
    if after_finetuning is not None:
        change = "" if before is None else f" ({after_finetuning - before:+.2f} points)"
        done = f" after {steps} steps" if steps is not None else ""
        rows.append(("accuracy after fine-tuning", _pct(after_finetuning) + change + done))
    return rows
