"""The README's examples run: the Python API block and the main quick-start command."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _block(marker: str) -> str:
    match = re.search(rf"<!-- {marker} -->\s*```\w+\n(.*?)```", README, re.S)
    assert match, f"README has no block after <!-- {marker} -->"
    return match.group(1)


def test_api_example_runs(tmp_path, monkeypatch):
    code = _block("api-example").replace('"models/', f'"{ROOT}/models/')
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    report = namespace["report"]
    assert report["macs_after"] <= 0.5 * report["macs_before"]
    assert (tmp_path / "vgg_half.onnx").exists()
    assert isinstance(namespace["pruned"], onnx.ModelProto)


def test_ci_runs_the_readme_test_command():
    command = _block("test-command").strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "test-command" in ci and command.startswith("pip install")
    assert "pytest" in command


def test_main_command_runs_on_the_embedded_model(tmp_path):
    """The quick-start main job, shortened (few iterations) so that the suite stays fast."""
    command = _block("main-command").strip().split("&&", 1)[1]
    args = shlex.split(command)
    assert args[0] == "onnxprune"
    args = [str(ROOT / a) if a.startswith("models/") else a for a in args[1:]]
    args += ["--iterations", "4", "--quiet", "--no-recalibrate"]
    result = subprocess.run([sys.executable, "-m", "onnxprune", *args], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "resnet_pruned.onnx").exists()
    assert "speedup" in result.stdout and "accuracy" in result.stdout
