"""The HTML page: head (inline style, a Content-Security-Policy that forbids every external load),
table of contents and the sections in order."""

from __future__ import annotations

import os
from pathlib import PurePath

from onnxprune.htmlreport.html import esc
from onnxprune.htmlreport.profile_section import profile_section
from onnxprune.htmlreport.sections import (barriers_section, latency_section, layers_section,
                                           settings_section, summary_section)
from onnxprune.htmlreport.svg import require_matplotlib

# Nothing may load from anywhere: styles are inline, images none, scripts none.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Liberation Sans", sans-serif;
       margin: 0 auto; max-width: 1180px; padding: 0 24px 48px; color: #1d2733;
       line-height: 1.45; font-size: 14px; }
header { border-bottom: 2px solid #1f5fa8; padding: 18px 0 10px; margin-bottom: 8px; }
header h1 { margin: 0; font-size: 22px; }
header p { margin: 4px 0 0; color: #52606d; }
nav { font-size: 13px; margin: 6px 0 14px; }
nav a { margin-right: 14px; color: #1f5fa8; text-decoration: none; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #d9e0e8; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { padding: 3px 10px; border-bottom: 1px solid #e6eaef; text-align: left;
         vertical-align: top; }
thead th { background: #f2f5f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.kv th { font-weight: 600; color: #52606d; }
tr.worse td { background: #fbe9e7; }
p.bad, p.gap { font-weight: 600; }
p.bad { color: #c0392b; }
figure { margin: 10px 0; }
figcaption { font-size: 12px; color: #52606d; }
svg.chart { max-width: 100%; height: auto; display: block; }
details { margin: 6px 0; }
summary { cursor: pointer; color: #1f5fa8; }
pre { background: #f6f8fa; padding: 8px; overflow-x: auto; font-size: 12px; }
"""
_SECTIONS = (("summary", "Summary"), ("layers", "Layers"), ("barriers", "Barriers"),
             ("latency", "Latency"), ("profile", "Where the time went"),
             ("settings", "Settings"))


def render_html(report: dict, analysis: dict | None = None, profile: dict | None = None) -> str:
    """One self-contained HTML page for a ``compress`` report.

    ``analysis`` is ``{"original": analyze(original), "pruned": analyze(pruned)}`` (MACs per
    layer, barriers); ``profile`` is ``runtime.profile.profile_models([original, pruned])`` (where
    the time went). Both are optional, as is every key of ``report``: absent data leaves a note.
    Raises OnnxPruneError with an install hint when matplotlib is missing.
    """
    require_matplotlib()
    parts = [summary_section(report), layers_section(report, analysis),
             barriers_section(report, analysis), latency_section(report),
             profile_section(profile, report), settings_section(report)]
    present = [(ident, title) for ident, title in _SECTIONS
               if any(p.startswith(f'<section id="{ident}">') for p in parts)]
    nav = "".join(f'<a href="#{ident}">{esc(title)}</a>' for ident, title in present)
    name = PurePath(str(report.get("model", "model"))).name
    subtitle = " → ".join(str(report[k]) for k in ("model", "output") if report.get(k))
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>onnxprune report: {esc(name)}</title>", f"<style>{_STYLE}</style>", "</head>",
        "<body>", f"<header><h1>onnxprune report: {esc(name)}</h1>"
                  f"<p>{esc(subtitle)}</p></header>", f"<nav>{nav}</nav>",
        *[p for p in parts if p], "</body>", "</html>", ""])


def write_html(report: dict, path: str | os.PathLike, analysis: dict | None = None,
               profile: dict | None = None, force: bool = False) -> str:
    """Render the page and write it to ``path`` atomically (UTF-8); returns the path."""
    from onnxprune.graph import atomic_write

    page = render_html(report, analysis, profile).encode("utf-8")
    with atomic_write(path, mode="wb", force=force) as handle:
        handle.write(page)
    return str(path)
