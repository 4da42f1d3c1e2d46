"""The CLI's shape: cheap to start, help for every command, one-line errors on bad paths."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from onnxprune.cli import main


def test_import_and_help_do_not_load_torch_or_onnxruntime():
    code = ("import sys, onnxprune, onnxprune.cli; from click.testing import CliRunner; "
            "r = CliRunner().invoke(onnxprune.cli.main, ['--help']); assert r.exit_code == 0; "
            "print(sorted(m for m in ('torch', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_command_has_help():
    runner = CliRunner()
    for name in ("analyze", "prune", "compress", "validate", "bench"):
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Usage" in result.output


def test_missing_model_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["analyze", str(tmp_path / "nope.onnx")])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "no such file" in result.stderr


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "onnxprune", "--version"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "version" in out.stdout
