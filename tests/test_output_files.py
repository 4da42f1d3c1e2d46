"""Outputs get the permissions a plain open() would give, not the private mode of temp files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import onnx

from onnxprune.graph import atomic_write, load_model, save_model

ROOT = Path(__file__).resolve().parent.parent


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_saved_model_data_and_reports_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        model = load_model(ROOT / "models" / "vgg_dynamo.onnx").model
        save_model(model, tmp_path / "m.onnx", external_data=True)
        with atomic_write(tmp_path / "r.json") as handle:
            handle.write("{}")
    finally:
        os.umask(old)
    for name in ("m.onnx", "m.onnx.data", "r.json"):
        assert _mode(tmp_path / name) == 0o644, name
    onnx.checker.check_model(str(tmp_path / "m.onnx"))
