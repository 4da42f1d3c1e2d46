"""Faults: Ctrl-C / SIGTERM / SIGKILL in the middle of a run, internal errors, --debug, overwrites."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import big_cnn, cnn, save  # noqa: E402
from killing import (after_seconds, assert_no_partial_outputs, leftovers,  # noqa: E402
                     run_and_kill, when_path_appears)

from onnxprune import api  # noqa: E402
from onnxprune.cli import main  # noqa: E402
from onnxprune.errors import OnnxPruneError  # noqa: E402
from onnxprune.graph import TEMP_PREFIX, load_model, save_model  # noqa: E402


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big")
    model = big_cnn(folder / "big.onnx", megabytes=24)
    plan = folder / "plan.json"
    plan.write_text(json.dumps({"keep": {"c1": list(range(0, 40, 2))}}))
    return model, plan


@pytest.mark.parametrize("sig,when", [
    (signal.SIGINT, "start"), (signal.SIGINT, "save"), (signal.SIGTERM, "save"),
    (signal.SIGKILL, "start"), (signal.SIGKILL, "save"),
])
def test_killed_prune_leaves_no_partial_output(big, tmp_path, sig, when):
    model, plan = big
    out = tmp_path / "out"
    out.mkdir()
    digest = model.read_bytes()
    trigger = after_seconds(1.0) if when == "start" else when_path_appears(out, TEMP_PREFIX + "*")
    result = run_and_kill(["prune", model, "--plan", plan, "-o", out / "pruned.onnx"], out, sig,
                          trigger)
    assert_no_partial_outputs(out, result, finished_outputs=["pruned.onnx"])
    if (out / "pruned.onnx").exists():  # the run had finished: the output is whole
        onnx.checker.check_model(str(out / "pruned.onnx"))
    assert model.read_bytes() == digest
    if result.killed and result.returncode != 0 and when == "save":
        assert not (out / "pruned.onnx").exists()  # killed while writing: no final name
    if sig == signal.SIGKILL and leftovers(out, result):
        # the next run in that folder sweeps the dead process's temporary entry
        CliRunner().invoke(main, ["prune", str(model), "--plan", str(plan), "-o",
                                  str(out / "again.onnx")])
        assert not any(p.name.startswith(TEMP_PREFIX) for p in out.iterdir())


def test_keyboard_interrupt_during_save_exits_130_and_cleans_up(tmp_path, monkeypatch):
    model = save(cnn(), tmp_path / "m.onnx")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"keep": {"c1": [0, 1]}}))
    real_save = onnx.save_model

    def interrupted(proto, path, *args, **kwargs):
        real_save(proto, path, *args, **kwargs)  # the temporary file is complete, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx, "save_model", interrupted)
    out = tmp_path / "out"
    out.mkdir()
    result = CliRunner().invoke(main, ["prune", str(model), "--plan", str(plan), "-o",
                                       str(out / "p.onnx")])
    assert result.exit_code == 130
    assert "Traceback" not in result.stderr and "interrupted" in result.stderr
    assert list(out.iterdir()) == []


def test_internal_error_exits_3_with_traceback_and_debug_shows_user_tracebacks(tmp_path,
                                                                              monkeypatch):
    model = save(cnn(), tmp_path / "m.onnx")

    def boom(*_, **__):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(api, "analyze", boom)
    result = CliRunner().invoke(main, ["analyze", str(model)])
    assert result.exit_code == 3 and "Traceback" in result.stderr and "internal error" in result.stderr

    def user_error(*_, **__):
        raise OnnxPruneError("a user error")

    monkeypatch.setattr(api, "analyze", user_error)
    plain = CliRunner().invoke(main, ["analyze", str(model)])
    assert plain.exit_code == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip() == "onnxprune: error: a user error"
    debug = CliRunner().invoke(main, ["--debug", "analyze", str(model)])
    assert debug.exit_code == 2 and "Traceback" in debug.stderr


def test_never_overwrites_inputs_without_force(tmp_path):
    model_path = save(cnn(), tmp_path / "m.onnx")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"keep": {"c1": [0, 1]}}))
    original = model_path.read_bytes()
    runner = CliRunner()
    for target in (model_path, plan):
        result = runner.invoke(main, ["prune", str(model_path), "--plan", str(plan), "-o",
                                      str(target)])
        assert result.exit_code == 2 and "refusing to overwrite" in result.stderr
    assert model_path.read_bytes() == original
    forced = runner.invoke(main, ["prune", str(model_path), "--plan", str(plan), "-o",
                                  str(model_path), "--force"])
    assert forced.exit_code == 0, forced.stderr
    assert not any(p.name.startswith(TEMP_PREFIX) for p in tmp_path.iterdir())


def test_external_data_of_an_input_is_protected(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    model = cnn()
    onnx.save_model(model, str(src / "m.onnx"), save_as_external_data=True,
                    location="out.onnx.data", size_threshold=0)
    loaded = load_model(src / "m.onnx")
    assert loaded.used_external_data and loaded.external_files
    data_before = (src / "out.onnx.data").read_bytes()
    # writing out.onnx with external data would replace the input's out.onnx.data
    with pytest.raises(OnnxPruneError, match="external data file of an input"):
        save_model(loaded.model, src / "out.onnx", external_data=True)
    assert (src / "out.onnx.data").read_bytes() == data_before
    assert not (src / "out.onnx").exists()


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    def failing(proto, path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx, "save_model", failing)
    with pytest.raises(OnnxPruneError, match="No space left"):
        save_model(cnn(), tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []
