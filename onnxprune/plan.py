"""Plan files: ``{"keep": {"<group id>": [sorted kept channel indices]}}``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from onnxprune.errors import OnnxPruneError
from onnxprune.graph import atomic_write


def load_plan(path: str | os.PathLike) -> dict[str, list[int]]:
    """Read a plan file's ``keep`` mapping; a malformed file is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise OnnxPruneError(f"{path}: plan file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OnnxPruneError(f"{path}: not a JSON plan ({exc.__class__.__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("keep"), dict):
        raise OnnxPruneError(f"{path}: a plan is a JSON object with a 'keep' object")
    return data["keep"]


def save_plan(keep: dict[str, list[int]], path: str | os.PathLike) -> None:
    """Write a plan atomically."""
    with atomic_write(path) as handle:
        json.dump({"keep": {k: sorted(int(i) for i in v) for k, v in keep.items()}}, handle,
                  indent=1)
