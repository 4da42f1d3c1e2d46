"""Reports people look at: one self-contained HTML file and a Markdown CI summary of a
``compress`` report.

- ``render_html(report, analysis=None, profile=None) -> str``: the HTML page. No network: no
  CDN, fonts or scripts; the charts are inline SVG drawn by matplotlib (the ``[report]`` extra).
- ``build_report_inputs(report, ...) -> {"analysis", "profile"}``: the analyses of the original
  and pruned models and their per-node profile, from the model files the report names.
- ``summary_markdown(report) -> str``: the summary table in Markdown.
"""

from onnxprune.htmlreport.inputs import build_report_inputs
from onnxprune.htmlreport.markdown import summary_markdown
from onnxprune.htmlreport.page import render_html, write_html

__all__ = ["build_report_inputs", "render_html", "summary_markdown", "write_html"]
