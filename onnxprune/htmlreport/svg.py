"""matplotlib figures as inline SVG: lazy import, one id per chart, ids prefixed, tooltips.

matplotlib is an optional extra (``pip install 'onnxprune[report]'``). Figures are built with
``matplotlib.figure.Figure`` directly, never through pyplot, so rendering a report changes no
global backend and opens no window.
"""

from __future__ import annotations

import contextlib
import html
import io
import re

from onnxprune.errors import OnnxPruneError

INSTALL_HINT = ("the HTML report needs matplotlib, which is not installed: "
                "pip install 'onnxprune[report]' (or pip install matplotlib)")
_RC = {"svg.fonttype": "none", "svg.hashsalt": "onnxprune", "font.size": 9,
       "font.family": "sans-serif", "axes.spines.top": False, "axes.spines.right": False}
_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}
_REF = re.compile(r'(\bid="|url\(#|href="#)([^")]+)')
COLORS = {"before": "#9aa9bd", "after": "#1f5fa8", "bad": "#c0392b", "line": "#e08e0b"}


def require_matplotlib():
    """The ``matplotlib`` module; a one-line install hint (OnnxPruneError) when it is missing."""
    try:
        import matplotlib
        import matplotlib.figure  # noqa: F401
    except ImportError:
        raise OnnxPruneError(INSTALL_HINT) from None
    return matplotlib


@contextlib.contextmanager
def figure(width: float, height: float):
    """A matplotlib ``Figure`` (no pyplot) inside the report's rc settings, which apply while
    the chart is drawn and saved and are restored afterwards."""
    matplotlib = require_matplotlib()
    with matplotlib.rc_context(_RC):
        yield matplotlib.figure.Figure(figsize=(width, height), layout="constrained")


def to_svg(fig, chart_id: str, label: str, tooltips: dict[str, str] | None = None) -> str:
    """``fig`` as an inline ``<svg id=chart_id>`` element.

    Every id inside is prefixed with ``chart_id`` (so several charts can share a page and an
    artist's gid ``kept-3`` becomes ``<g id="{chart_id}-kept-3">``); ``tooltips`` maps a gid to
    the text shown on hover (an SVG ``<title>``).
    """
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata=_METADATA)
    text = buffer.getvalue()
    text = text[text.index("<svg"):]  # no XML prolog or DOCTYPE (which names a remote DTD)
    defined = set(re.findall(r'\bid="([^"]+)"', text))
    text = _REF.sub(lambda m: m.group(1) + (f"{chart_id}-{m.group(2)}" if m.group(2) in defined
                                            else m.group(2)), text)
    text = text.replace("<svg ", f'<svg id="{chart_id}" class="chart" role="img" '
                                 f'aria-label="{html.escape(label)}" ', 1)
    for gid, tip in (tooltips or {}).items():
        text = text.replace(f'<g id="{chart_id}-{gid}">',
                            f'<g id="{chart_id}-{gid}"><title>{html.escape(tip)}</title>', 1)
    return text


def short_name(name: str) -> str:
    """A readable label for a tensor or node name (``/stages/stages.1/conv1/Conv_output_0`` ->
    ``stages.1/conv1/Conv``)."""
    name = re.sub(r"_output_\d+$", "", str(name)).strip("/")
    parts = name.split("/")
    # exporters repeat the module path (/stages/stages.1/...): drop the duplicated prefix
    if len(parts) > 1 and parts[1].startswith(parts[0] + "."):
        parts = parts[1:]
    return "/".join(parts) or str(name)
