"""What the HTML report needs beyond the JSON report: the analyses of the original and the pruned
model and their per-node profile, computed from the model files that the report names."""

from __future__ import annotations

import os
from pathlib import Path


def model_path(name, base: str | os.PathLike | None = None) -> Path | None:
    """The file ``name`` (a path from the report) as given, else relative to ``base`` (the
    report's folder), else None."""
    if not name:
        return None
    path = Path(str(name))
    if path.is_file():
        return path
    if base is not None and not path.is_absolute() and (Path(base) / path).is_file():
        return Path(base) / path
    if base is not None and (Path(base) / path.name).is_file():
        return Path(base) / path.name
    return None


def build_report_inputs(report: dict, analyze, base: str | os.PathLike | None = None,
                        profile: bool = True, provider: str = "cpu", batch: int = 1,
                        runs: int = 20) -> dict:
    """``{"analysis": ..., "profile": ...}`` for ``render_html(report, **inputs)``.

    ``analysis`` is ``{"original": analyze(model), "pruned": analyze(output)}`` and ``profile``
    the per-node profile of both at ``batch`` on ``provider`` (``profile_models``); each is None
    when the report's ``model`` or ``output`` file cannot be found (as given, or in ``base``,
    usually the report's folder), and ``profile`` also when ``profile`` is false. ``analyze`` is
    ``onnxprune.api.analyze`` (passed in, so that this layer does not import the API).
    """
    original = model_path(report.get("model"), base)
    pruned = model_path(report.get("output"), base)
    if original is None or pruned is None:
        return {"analysis": None, "profile": None}
    analysis = {"original": analyze(original), "pruned": analyze(pruned)}
    timings = None
    if profile:
        from onnxprune.runtime.profile import profile_models

        timings = profile_models([original, pruned], provider=provider, batch=batch, runs=runs,
                                 names=("original", "pruned"))
    return {"analysis": analysis, "profile": timings}
