"""validate: identical/pruned/broken models, thresholds and exit codes through the CLI."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from runtime_models import conv_classifier, negated_weights, pruned_weights

from onnxprune.cli import main
from onnxprune.data import load_dataset
from onnxprune.errors import OnnxPruneError
from onnxprune.runtime.session import create_session, run_batches
from onnxprune.runtime.validate import error_stats, format_validation, validate_models

KEYS = {"original", "pruned", "samples", "provider", "evidence", "accuracy_original", "accuracy_pruned",
        "accuracy_drop", "agreement", "outputs", "thresholds", "passed", "failures"}


def _invoke(*args):
    return CliRunner().invoke(main, list(args))


def _one_line_error(result, code, *needles):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("onnxprune: error:")]
    assert len(errors) == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def test_identical_models_agree_exactly(npz_data):
    data = load_dataset(npz_data)
    result = validate_models(conv_classifier(), conv_classifier(), data, provider="cpu", batch_size=7)
    assert set(result) == KEYS
    assert result["samples"] == 20 and result["provider"] == "CPUExecutionProvider"
    assert result["agreement"] == 1.0
    assert result["accuracy_original"] == 100.0 and result["accuracy_drop"] == 0.0
    stats = result["outputs"]["logits"]
    assert stats["max_abs"] == 0.0 and stats["mean_abs"] == 0.0 and stats["rel_max_abs"] == 0.0
    assert stats["cosine"] == pytest.approx(1.0)
    assert result["passed"] and result["failures"] == []


def test_pruned_model_differs_with_finite_stats(npz_data):
    data = load_dataset(npz_data)
    result = validate_models(conv_classifier(), conv_classifier(pruned_weights([0, 2, 3, 5])), data,
                             provider="cpu")
    stats = result["outputs"]["logits"]
    assert stats["max_abs"] > 0 and 0 < stats["mean_abs"] <= stats["max_abs"]
    assert -1.0 <= stats["cosine"] < 1.0
    assert stats["rel_max_abs"] > 0
    assert 0.0 <= result["agreement"] <= 1.0
    assert result["accuracy_drop"] == pytest.approx(100.0 - result["accuracy_pruned"])
    text = format_validation(result)
    assert "agreement" in text and "logits" in text


def test_negated_model_fails_thresholds(npz_data):
    data = load_dataset(npz_data)
    result = validate_models(conv_classifier(), conv_classifier(negated_weights()), data,
                             provider="cpu", max_accuracy_drop=1.0, min_agreement=0.9,
                             allow_small_eval=True)
    assert result["agreement"] == 0.0 and result["accuracy_drop"] == 100.0
    assert not result["passed"] and len(result["failures"]) == 2
    assert result["thresholds"] == {"max_accuracy_drop": 1.0, "min_agreement": 0.9}


def test_error_stats_edge_cases():
    zeros = np.zeros(4)
    assert error_stats(zeros, zeros) == {"max_abs": 0.0, "mean_abs": 0.0, "cosine": 1.0, "rel_max_abs": 0.0}
    stats = error_stats(zeros, np.ones(4))
    assert stats["rel_max_abs"] is None and stats["cosine"] == 0.0 and stats["max_abs"] == 1.0
    stats = error_stats(np.array([2.0, -4.0]), np.array([2.0, -3.0]))
    assert stats["max_abs"] == 1.0 and stats["rel_max_abs"] == 0.25 and stats["mean_abs"] == 0.5


def test_static_batch_model_is_padded(tmp_path):
    x = np.random.default_rng(3).standard_normal((10, 3, 8, 8)).astype(np.float32)
    dynamic = run_batches(create_session(conv_classifier(), "cpu"), x, batch_size=3)[0]
    static = run_batches(create_session(conv_classifier(batch=4), "cpu"), x, batch_size=3)[0]
    assert static.shape == (10, 5)
    np.testing.assert_allclose(static, dynamic, rtol=1e-5, atol=1e-5)


def test_cli_pass_json(model_files, npz_data):
    result = _invoke("validate", model_files["original"], model_files["original"], "--data", npz_data,
                     "--json", "--provider", "cpu", "--max-accuracy-drop", "0.5",
                     "--min-agreement", "0.99", "--batch-size", "8", "--allow-small-eval")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == KEYS and report["passed"] is True
    assert report["outputs"]["logits"]["max_abs"] == 0.0


def test_cli_accuracy_threshold_fails_with_json(model_files, npz_data):
    result = _invoke("validate", model_files["original"], model_files["negated"], "--data", npz_data,
                     "--json", "--max-accuracy-drop", "1.0")
    line = _one_line_error(result, 1, "accuracy drop 100.00 points exceeds --max-accuracy-drop 1.0",
                           "by 99.00 points")
    report = json.loads(result.stdout)  # the JSON is still printed before the exit
    assert report["passed"] is False and report["failures"][0] in line


def test_cli_agreement_threshold_fails(model_files, npz_data):
    result = _invoke("validate", model_files["original"], model_files["negated"], "--data", npz_data,
                     "--min-agreement", "0.95", "--limit", "10")
    _one_line_error(result, 1, "top-1 agreement 0.0000 is below --min-agreement 0.95")
    assert "samples  : 10" in result.stdout and "FAILED" in result.stdout


def test_cli_renamed_output_is_bad_input(model_files, npz_data):
    result = _invoke("validate", model_files["original"], model_files["renamed"], "--data", npz_data)
    _one_line_error(result, 2, "output names differ", "logits", "scores")


def test_cli_output_rank_mismatch_is_bad_input(model_files, npz_data):
    result = _invoke("validate", model_files["original"], model_files["rank4"], "--data", npz_data)
    _one_line_error(result, 2, "output 'logits' has rank 2 in the original but 4")


def test_cli_bad_threshold_and_missing_labels(model_files, npz_data, tmp_path):
    result = _invoke("validate", model_files["original"], model_files["pruned"], "--data", npz_data,
                     "--min-agreement", "95")
    _one_line_error(result, 2, "'--min-agreement'", "[0, 1]", "'95'")
    unlabelled = tmp_path / "nolabels.npz"
    np.savez(unlabelled, x=np.zeros((3, 3, 8, 8), dtype=np.float32))
    result = _invoke("validate", model_files["original"], model_files["pruned"], "--data",
                     str(unlabelled), "--max-accuracy-drop", "1")
    _one_line_error(result, 2, "--max-accuracy-drop needs labels")


def test_cli_data_mismatch_is_bad_input(model_files, tmp_path):
    data = tmp_path / "gray.npz"
    np.savez(data, x=np.zeros((3, 1, 8, 8), dtype=np.float32))
    result = _invoke("validate", model_files["original"], model_files["pruned"], "--data", str(data))
    _one_line_error(result, 2, "channel count 1")


def test_cli_missing_model_is_bad_input(model_files, npz_data, tmp_path):
    result = _invoke("validate", str(tmp_path / "nope.onnx"), model_files["pruned"], "--data", npz_data)
    _one_line_error(result, 2, "no such file")


def test_run_batches_rejects_zero_batch_size():
    session = create_session(conv_classifier(), "cpu")
    with pytest.raises(OnnxPruneError, match="batch size must be at least 1") as info:
        run_batches(session, np.zeros((1, 3, 8, 8), np.float32), batch_size=0)
    assert info.value.exit_code == 2


def test_small_evaluation_set_fails_closed_unless_allowed(model_files, npz_data):
    """20 samples: the thresholds hold, but the figure is too thin for a CI gate."""
    argv = ("validate", model_files["original"], model_files["original"], "--data", npz_data,
            "--provider", "cpu", "--min-agreement", "0.9")
    line = _one_line_error(_invoke(*argv), 1, "only 20 evaluation samples", "--allow-small-eval")
    assert "95% ci" in line.lower()
    assert _invoke(*argv, "--allow-small-eval").exit_code == 0
    report = json.loads(_invoke(*argv[:-2], "--json").stdout)  # no threshold: nothing fails
    assert report["passed"] and report["evidence"]["small"] and report["evidence"]["samples"] == 20
    low, high = report["evidence"]["agreement_ci"]
    assert 0.8 < low < 1.0 == high  # Wilson interval of 20/20


def test_wilson_interval_narrows_with_samples():
    from onnxprune.runtime.validate import wilson_interval

    small, large = wilson_interval(0.9, 20), wilson_interval(0.9, 2000)
    assert small[0] < large[0] < 0.9 < large[1] < small[1]
    assert wilson_interval(0.9, 2000)[1] - wilson_interval(0.9, 2000)[0] < 0.03
