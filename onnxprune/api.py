"""The public API: one function per CLI command, each taking a frozen config or plain arguments."""

from __future__ import annotations

import os
from dataclasses import dataclass

from onnxprune.graph import ensure_node_names, load_model


@dataclass(frozen=True)
class AnalyzeConfig:
    model: str


def analyze(model: str | os.PathLike) -> dict:
    """Summary of an ONNX model: I/O, opset, op counts, params, MACs (batch 1)."""
    from onnxprune.analysis.summary import summarize

    loaded = load_model(model)
    ensure_node_names(loaded.model)
    return summarize(loaded.model)
