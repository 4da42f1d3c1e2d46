"""The report's summary as a short Markdown table, for CI step summaries ($GITHUB_STEP_SUMMARY)."""

from __future__ import annotations

from pathlib import PurePath

from onnxprune.htmlreport.facts import error_rows, frac, is_number, summary_rows


def _cell(text) -> str:
    """Text safe inside a Markdown table cell: no pipes, no line breaks, no raw HTML."""
    text = " ".join(str(text).split())
    return (text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")
            .replace(">", "&gt;"))


def _title(report: dict) -> str:
    names = [PurePath(str(report[k])).name for k in ("model", "output") if report.get(k)]
    what = " → ".join(names) or "compress report"
    extra = [str(report["method"])] if report.get("method") else []
    if is_number(report.get("target")):
        extra.append(f"target {frac(report['target'], 1)} of the MACs")
    return f"### onnxprune: {_cell(what)}" + (f" ({_cell(', '.join(extra))})" if extra else "")


def summary_markdown(report: dict) -> str:
    """The summary of a ``compress`` report (MACs, params, accuracy, agreement, output error,
    latency) as a Markdown table, with the run's notes and failed thresholds below it."""
    lines = [_title(report), ""]
    rows = summary_rows(report)
    for name, worst, mean, cosine, _ in error_rows(report):
        rows.append((f"Output error ({name})", "", f"max abs {worst}",
                     f"mean abs {mean}, cosine {cosine}"))
    if rows:
        lines += ["| | original | pruned | change |", "|---|---:|---:|---|"]
        lines += [f"| {' | '.join(_cell(c) for c in row)} |" for row in rows]
    else:
        lines.append("_The report holds no figures._")
    validation = report.get("validation") or {}
    failures = validation.get("failures") or []
    if failures:
        lines += ["", "**Failed:** " + _cell("; ".join(map(str, failures)))]
    elif validation.get("passed") is True and any(
            v is not None for v in (validation.get("thresholds") or {}).values()):
        lines += ["", "**Passed** the accuracy thresholds."]
    notes = report.get("notes") or []
    if notes:
        lines += ["", *[f"- {_cell(note)}" for note in notes]]
    return "\n".join(lines) + "\n"
