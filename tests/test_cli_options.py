"""Shared CLI options: declared once, parsed by one function; every malformed value through every
subcommand that has the option is one line on stderr naming the option, exit 2, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from onnxprune.cli import main

# option -> a malformed value
MALFORMED = {
    "--provider": "tpu", "--input-size": "abc", "--mean": "0.5,x", "--std": "0,1,1",
    "--batch": "1,x", "--batch-size": "0", "--threads": "-2", "--limit": "many",
    "--fraction": "1.5", "--max-accuracy-drop": "lots", "--min-agreement": "95",
    "--pixel-scale": "0", "--layout": "chw", "--channel-order": "grb", "--preset": "coco",
    "--target": "2", "--round-to": "eight", "--holdout": "1", "--iterations": "x",
    "--method": "bogus", "--recalibration": "magic", "--calibration-samples": "0",
    "--warmup": "-1", "--duration": "soon", "--min-speedup": "fast", "--lr": "-1",
    "--memory-budget": "12Q", "--workers": "-1", "--resize": "0",
}


def _placeholders(command, tmp_path) -> list[str]:
    """Positional arguments and required options, with harmless values."""
    model = str(tmp_path / "m.onnx")
    argv = []
    for param in command.params:
        if param.param_type_name == "argument":
            argv += [model] * (1 if param.nargs == 1 else 2)
        elif getattr(param, "required", False):
            argv += [param.opts[0], str(tmp_path / "x")]
    return argv


def _cases():
    for name, command in sorted(main.commands.items()):
        options = {opt for p in command.params for opt in getattr(p, "opts", [])}
        for option, value in MALFORMED.items():
            if option in options:
                yield pytest.param(name, option, value, id=f"{name}{option}")


def test_every_shared_option_is_covered():
    shared = {"--provider", "--input-size", "--mean", "--std", "--threads", "--limit",
              "--max-accuracy-drop", "--min-agreement", "--layout", "--preset"}
    covered = {option for _, option, _ in (c.values for c in _cases())}
    assert shared <= covered


@pytest.mark.parametrize("command,option,value", list(_cases()))
def test_malformed_value_is_one_line_exit_2(command, option, value, tmp_path):
    argv = [command, *_placeholders(main.commands[command], tmp_path), option, value]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2, (argv, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("onnxprune: error:") and option in lines[0], lines[0]
    assert "Traceback" not in result.output and "Usage:" not in result.stderr


@pytest.mark.parametrize("argv,needle", [
    (["compress"], "MODEL"),
    (["validate", "a.onnx"], "PRUNED"),
    (["prune", "a.onnx"], "--plan"),
    (["analyze", "a.onnx", "--no-such-option"], "--no-such-option"),
    (["no-such-command"], "no-such-command"),
])
def test_usage_errors_are_one_line(argv, needle):
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxprune: error:") and needle in lines[0], \
        result.stderr


def test_usage_error_through_a_real_process():
    out = subprocess.run([sys.executable, "-m", "onnxprune", "compress", "m.onnx", "--input-size",
                          "abc"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "--input-size" in out.stderr


def test_input_size_accepts_both_spellings():
    from onnxprune.cli_options import NumberList

    kind = NumberList(int, 2, True, "H,W")
    assert kind.convert("224,224", None, None) == (224, 224)
    assert kind.convert("320x240", None, None) == (320, 240)
