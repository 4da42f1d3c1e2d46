"""Progress bars: on stderr with --progress (or a terminal), silent otherwise and with --quiet."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from onnxprune.cli import main
from onnxprune.progress import Steps

ROOT = Path(__file__).resolve().parent.parent


def _compress(tmp_path, *extra):
    argv = ["compress", str(ROOT / "models" / "vgg.onnx"), "--data",
            str(ROOT / "models" / "mnist_train.npz"), "--limit", "200", "--iterations", "3",
            "--batch-size", "8", "--calibration-samples", "16", "--method", "autobot", "-o", str(tmp_path / "o.onnx"),
            *extra]
    return CliRunner().invoke(main, argv)


def test_progress_bar_when_asked(tmp_path):
    result = _compress(tmp_path, "--progress")
    assert result.exit_code == 0, result.output
    assert "gate training" in result.stderr and "3/3" in result.stderr and "loss" in result.stderr
    assert "recalibration:" in result.stderr
    assert "validation: 20/20 samples" in result.stderr  # the held-out tenth of --limit 200


def test_no_bar_when_stderr_is_not_a_terminal_or_quiet(tmp_path):
    for extra in ((), ("--quiet", "--progress")):
        result = _compress(tmp_path, *extra)
        assert result.exit_code == 0, result.output
        assert "gate training" not in result.stderr


def test_steps_update_is_bounded(capsys):
    steps = Steps(force=True)
    with steps.phase("work", 4) as update:
        for i in range(1, 7):
            update(i, f"step {i}")
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == "work: 4/4 step 4" and len(lines) <= 5  # once per tenth
    with steps.phase("later") as update:  # a total known only at the first update
        update(1, "a", 2)
        update(2, "b")
    assert capsys.readouterr().err.splitlines()[-1] == "later: 2/2 b"
