"""compress end to end on the reference VGG: exact target, report, determinism, modes, resume."""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnxprune.analysis.summary import count_macs
from onnxprune.cli import main
from onnxprune.errors import OnnxPruneError
from onnxprune.pipeline import CompressConfig, compress

ROOT = Path(__file__).resolve().parent.parent
VGG = ROOT / "models" / "vgg.onnx"
TRAIN = ROOT / "models" / "mnist_train.npz"
TEST = ROOT / "models" / "mnist_test.npz"


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("data")
    train, test = np.load(TRAIN), np.load(TEST)
    labeled, unlabeled = folder / "train.npz", folder / "unlabeled.npz"
    np.savez(labeled, x=train["x"][:640], y=train["y"][:640])
    np.savez(unlabeled, x=train["x"][:640])
    np.savez(folder / "test.npz", x=test["x"][:300], y=test["y"][:300])
    return labeled, unlabeled


def _config(tmp_path: Path, data, **kwargs) -> CompressConfig:
    base = dict(model=str(VGG), output=str(tmp_path / "out.onnx"), target=0.5,
                data=str(data) if data else None, iterations=6, batch_size=32, round_to=1,
                calibration_samples=128, quiet=True, method="autobot")
    base.update(kwargs)
    return CompressConfig(**base)


def test_auto_method_is_refit_before_a_refit_and_autobot_otherwise(tmp_path):
    from onnxprune.pipeline import resolve_method

    def resolved(data="d.npz", **kwargs):
        return resolve_method(_config(tmp_path, data, **{"method": "auto", **kwargs}))

    assert resolved() == "refit"
    assert resolved(recalibration="stats") == "autobot"
    assert resolved(recalibrate=False) == "autobot"
    assert resolved(data=None) == "refit"  # data-free too (yardstick_val_datafree.json)
    assert resolved(data=None, recalibration="stats") == "autobot"
    assert resolved(method="l1") == "l1"


def test_auto_method_reports_its_choice(tmp_path, small_data):
    report = compress(_config(tmp_path, small_data[0], method="auto"))
    assert report["method"] == "refit" and report["method_requested"] == "auto"
    assert any("--method auto chose refit" in note for note in report["notes"])
    assert report["macs_ratio"] <= 0.5


def test_fisher_weighted_refit_runs_from_the_cli_and_says_so(tmp_path, small_data):
    out, report = tmp_path / "fisher.onnx", tmp_path / "fisher.json"
    result = CliRunner().invoke(main, [
        "compress", str(VGG), "--target", "0.5", "--data", str(small_data[1]), "--method",
        "refit", "--refit-weighting", "fisher", "--calibration-samples", "128", "--round-to",
        "1", "-o", str(out), "--report", str(report), "--quiet"])
    assert result.exit_code == 0, result.output
    saved = json.loads(report.read_text())
    assert saved["settings"]["refit_weighting"] == "fisher"
    assert any("weighted by the fisher diagonal" in note for note in saved["notes"])
    assert saved["macs_after"] <= 0.5 * saved["macs_before"]
    onnx.checker.check_model(onnx.load(out), full_check=True)
    bad = CliRunner().invoke(main, ["compress", str(VGG), "--refit-weighting", "norm"])
    assert bad.exit_code == 2 and "--refit-weighting" in bad.output


def test_auto_refit_weighting_reports_its_choice(tmp_path, small_data):
    report = compress(_config(tmp_path, small_data[0], method="refit", refit_weighting="auto"))
    note = next(n for n in report["notes"] if n.startswith("--refit-weighting auto chose"))
    assert "relative" in note and "fisher" in note
    assert report["macs_ratio"] <= 0.5


def test_auto_refit_rounds_reports_its_choice_and_bad_counts_exit_2(tmp_path, small_data):
    report = compress(_config(tmp_path, small_data[0], method="refit", refit_rounds="auto"))
    note = next(n for n in report["notes"] if n.startswith("--refit-rounds auto chose"))
    assert "relative/3" in note and "relative/10" in note
    chosen = note.split(" chose relative/")[1].split(" ")[0]
    assert f"refit scores in {chosen} rounds" in report["notes"]
    assert report["macs_ratio"] <= 0.5
    bad = CliRunner().invoke(main, ["compress", str(VGG), "--refit-rounds", "0"])
    assert bad.exit_code == 2 and "--refit-rounds" in bad.output
    for bad_rounds in (0, True, "3"):
        with pytest.raises(OnnxPruneError, match="--refit-rounds"):
            compress(_config(tmp_path, small_data[0], method="refit", refit_rounds=bad_rounds,
                             output=str(tmp_path / "bad.onnx")))
    assert not (tmp_path / "bad.onnx").exists()  # refused before anything is written


@pytest.mark.parametrize("method", ["autobot", "refit", "l1", "bn-scale", "random"])
def test_every_method_hits_the_target_from_below(tmp_path, small_data, method):
    eval_data = small_data[0].parent / "test.npz"
    report = compress(_config(tmp_path, small_data[0], method=method, eval_data=str(eval_data),
                              report=str(tmp_path / "r.json"),
                              recalibrate=method == "autobot"))
    out = onnx.load(tmp_path / "out.onnx")
    onnx.checker.check_model(out, full_check=True)
    macs_before = count_macs(onnx.load(VGG))
    assert count_macs(out) == report["macs_after"]
    assert report["macs_after"] <= 0.5 * macs_before
    assert report["macs_after"] >= 0.995 * 0.5 * macs_before
    saved = json.loads((tmp_path / "r.json").read_text())
    for key in ("macs_before", "macs_after", "target", "params_before", "params_after", "groups",
                "settings", "accuracy_before", "accuracy_after"):
        assert key in saved
    assert saved["params_after"] < saved["params_before"]
    assert saved["accuracy_before"] > 95.0
    assert not Path(str(tmp_path / "out.onnx") + ".ckpt.npz").exists()


def test_same_command_twice_gives_the_same_model(tmp_path, small_data):
    first = tmp_path / "a"
    second = tmp_path / "b"
    first.mkdir()
    second.mkdir()
    compress(_config(first, small_data[0], recalibrate=False))
    compress(_config(second, small_data[0], recalibrate=False))
    assert _sha(first / "out.onnx") == _sha(second / "out.onnx")


def test_unlabeled_data_uses_distillation(tmp_path, small_data):
    report = compress(_config(tmp_path, small_data[1], recalibrate=False))
    assert report["task_loss"].startswith("distillation")
    assert report["macs_after"] <= 0.5 * report["macs_before"]


def test_data_free_mode_warns_and_runs(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["compress", str(VGG), "--target", "0.6", "-o",
                                  str(tmp_path / "free.onnx"), "--iterations", "3",
                                  "--no-recalibrate",
                                  "--batch-size", "16", "--json"])
    assert result.exit_code == 0, result.output
    assert "data-free" in result.stderr
    report = json.loads(result.stdout)
    assert report["task_loss"].startswith("data-free")


def test_bad_data_is_refused_before_training(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((4, 3, 28, 28), np.float32), y=np.zeros(4, np.int64))
    runner = CliRunner()
    result = runner.invoke(main, ["compress", str(VGG), "--data", str(bad), "-o",
                                  str(tmp_path / "o.onnx")])
    assert result.exit_code == 2
    assert "channel" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "o.onnx").exists()


def test_calibration_samples_reach_the_recalibration(tmp_path, small_data):
    runner = CliRunner()
    result = runner.invoke(main, ["compress", str(VGG), "--data", str(small_data[0]), "-o",
                                  str(tmp_path / "o.onnx"), "--calibration-samples", "0"])
    assert result.exit_code == 2 and "--calibration-samples" in result.stderr
    assert not (tmp_path / "o.onnx").exists()
    report = tmp_path / "r.json"
    result = runner.invoke(main, ["compress", str(VGG), "--data", str(small_data[0]), "-o",
                                  str(tmp_path / "o.onnx"), "--method", "l1", "--quiet",
                                  "--calibration-samples", "96", "--report", str(report)])
    assert result.exit_code == 0, result.output
    written = json.loads(report.read_text())
    assert written["settings"]["calibration_samples"] == 96
    layers = written["recalibration"]
    assert len(layers) == written["recalibrated_convs"] > 0
    assert all(r["how"] == "reconstruct" and r["ridge"] > 0 for r in layers)


def test_recalibration_mode_stats_matches_channel_statistics(tmp_path, small_data):
    runner = CliRunner()
    args = ["compress", str(VGG), "--data", str(small_data[0]), "--method", "l1", "--quiet"]
    result = runner.invoke(main, [*args, "-o", str(tmp_path / "o.onnx"),
                                  "--recalibration", "bogus"])
    assert result.exit_code == 2 and "--recalibration" in result.output
    assert not (tmp_path / "o.onnx").exists()
    outputs = {}
    for mode in ("stats", "reconstruct"):
        report = tmp_path / f"{mode}.json"
        result = runner.invoke(main, [*args, "-o", str(tmp_path / f"{mode}.onnx"),
                                      "--recalibration", mode, "--report", str(report)])
        assert result.exit_code == 0, result.output
        written = json.loads(report.read_text())
        assert written["settings"]["recalibration"] == mode
        outputs[mode] = written["recalibration"]
    # the same layers are corrected, by a per-channel scale and bias or by a least-squares refit
    assert outputs["stats"] and all(r["how"] == "stats" for r in outputs["stats"])
    assert all(r["how"] == "reconstruct" for r in outputs["reconstruct"])
    assert [r["layer"] for r in outputs["stats"]] == [r["layer"] for r in outputs["reconstruct"]]


def test_accuracy_threshold_failure_exits_1(tmp_path, small_data):
    eval_data = small_data[0].parent / "test.npz"
    runner = CliRunner()
    result = runner.invoke(main, ["compress", str(VGG), "--method", "random", "--target", "0.25",
                                  "--data", str(small_data[0]), "--eval-data", str(eval_data),
                                  "--no-recalibrate", "-o", str(tmp_path / "o.onnx"), "--quiet",
                                  "--max-accuracy-drop", "0.0"])
    assert result.exit_code == 1
    assert "max-accuracy-drop" in result.stderr


def test_interrupted_run_resumes_to_the_same_result(tmp_path, small_data, monkeypatch):
    import onnxprune.compress_scores as module

    reference = tmp_path / "ref"
    reference.mkdir()
    compress(_config(reference, small_data[0], iterations=24, recalibrate=False))
    original = module._gate_progress

    def interrupting(config, checkpointer, update):
        inner = original(config, checkpointer, update)

        def progress(record, snapshot):
            inner(record, snapshot)
            if record["iteration"] == 13:
                raise KeyboardInterrupt

        return progress

    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setattr(module, "_gate_progress", interrupting)
    with pytest.raises(KeyboardInterrupt):
        compress(_config(run, small_data[0], iterations=24, recalibrate=False))
    assert not (run / "out.onnx").exists()
    assert (run / "out.onnx.ckpt.npz").exists()
    monkeypatch.setattr(module, "_gate_progress", original)
    compress(_config(run, small_data[0], iterations=24, recalibrate=False, resume=True))
    assert _sha(run / "out.onnx") == _sha(reference / "out.onnx")
    assert not (run / "out.onnx.ckpt.npz").exists()


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path, small_data):
    from onnxprune.errors import OnnxPruneError
    from onnxprune.gates.checkpoint import Checkpointer

    Checkpointer(tmp_path / "out.onnx.ckpt.npz", "other").save({"iteration": 1})
    with pytest.raises(OnnxPruneError, match="other settings"):
        compress(_config(tmp_path, small_data[0], resume=True, recalibrate=False))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_killed_compress_leaves_no_output_and_resumes(tmp_path, small_data, sig):
    from tests.robustness.killing import (assert_no_partial_outputs, run_and_kill,
                                          when_path_appears)

    out = tmp_path / "out"
    out.mkdir()
    args = ["compress", str(VGG), "--data", str(small_data[0]), "-o", str(out / "m.onnx"),
            "--iterations", "200", "--batch-size", "16", "--no-recalibrate", "--quiet"]
    result = run_and_kill(args, out, sig, when=when_path_appears(out, "m.onnx.ckpt.npz"))
    assert result.killed
    assert not (out / "m.onnx").exists(), (result.returncode, result.stderr[-3000:])
    assert_no_partial_outputs(out, result, resumable=["m.onnx.ckpt.npz"])
    resumed = CliRunner().invoke(main, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    reference = tmp_path / "ref"
    reference.mkdir()
    CliRunner().invoke(main, [*args[:5], str(reference / "m.onnx"), *args[6:]])
    assert _sha(out / "m.onnx") == _sha(reference / "m.onnx")
