"""bench and sessions: documented keys, provider checks (no GPU here), the --min-speedup gate."""

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from runtime_models import conv_classifier, cuda_usable, pruned_weights  # noqa: F401 (skipif)

from onnxprune.analysis.summary import count_macs
from onnxprune.cli import main
from onnxprune.errors import OnnxPruneError
from onnxprune.runtime.bench import bench_models, format_bench, latency_stats
from onnxprune.runtime.session import CPU, create_session

TOP_KEYS = {"onnxruntime", "requested_provider", "available_providers", "provider", "machine",
            "settings", "models", "min_speedup", "passed", "failures"}
LATENCY_KEYS = {"batch", "iterations", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms", "throughput"}

needs_no_gpu = pytest.mark.skipif("cuda_usable()", reason="a usable GPU is present")


def _invoke(*args):
    return CliRunner().invoke(main, list(args))


def _one_line_error(result, code, *needles):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxprune: error:"), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_bench_models_keys_and_numbers():
    original, pruned = conv_classifier(), conv_classifier(pruned_weights([0, 1, 4]))
    result = bench_models([original, pruned], provider="cpu", batches=(1, 3), warmup=1,
                          iterations=3, names=["a", "b"])
    assert set(result) == TOP_KEYS
    assert result["provider"] == CPU and result["requested_provider"] == "cpu"
    assert result["settings"]["io_binding"] is False and result["settings"]["batches"] == [1, 3]
    assert result["machine"]["cpu"] and result["machine"]["gpu"] is None
    first, second = result["models"]
    assert [first["name"], second["name"]] == ["a", "b"]
    for entry in result["models"]:
        assert entry["provider"] == CPU
        for batch in ("1", "3"):
            stats = entry["latency"][batch]
            assert set(stats) == LATENCY_KEYS and stats["iterations"] == 3
            assert all(stats[k] > 0 for k in LATENCY_KEYS - {"batch", "iterations"})
            assert stats["min_ms"] <= stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"]
    assert first["speedup"]["1"] == {"p50": 1.0, "mean": 1.0}
    assert second["speedup"]["3"]["p50"] > 0
    assert first["mac_ratio"] == 1.0
    assert second["mac_ratio"] == pytest.approx(count_macs(original) / count_macs(pruned))
    assert second["mac_ratio"] > 1.5
    assert result["passed"] and result["failures"] == []
    text = format_bench(result)
    assert "p50 ms" in text and "CPUExecutionProvider" in text


def test_latency_stats_percentiles():
    stats = latency_stats([1.0, 2.0, 3.0, 4.0], batch=8)
    assert stats["mean_ms"] == 2.5 and stats["p50_ms"] == 2.5 and stats["min_ms"] == 1.0
    assert stats["throughput"] == pytest.approx(8 * 1000 / 2.5)


def test_cli_bench_json_cpu(model_files):
    result = _invoke("bench", model_files["original"], model_files["pruned"], "--provider", "cpu",
                     "--batch", "1,2", "--warmup", "1", "--iterations", "2", "--json", "--threads", "1")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == TOP_KEYS and report["machine"]["threads"] == 1
    assert [m["name"] for m in report["models"]] == [model_files["original"], model_files["pruned"]]
    assert report["models"][1]["latency"]["2"]["throughput"] > 0


@needs_no_gpu
def test_cli_bench_auto_reports_cpu(model_files):
    result = _invoke("bench", model_files["original"], "--warmup", "0", "--duration", "0.02", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["provider"] == CPU and report["requested_provider"] == "auto"
    assert report["models"][0]["latency"]["1"]["iterations"] >= 1


@needs_no_gpu
def test_cli_bench_cuda_without_gpu_is_one_line_error(model_files):
    result = _invoke("bench", model_files["original"], "--provider", "cuda", "--iterations", "1")
    _one_line_error(result, 2, "--provider cuda")


@needs_no_gpu
def test_create_session_cuda_without_gpu_raises():
    with pytest.raises(OnnxPruneError, match="--provider cuda") as info:
        create_session(conv_classifier(), provider="cuda")
    assert info.value.exit_code == 2
    assert create_session(conv_classifier(), provider="auto").provider == CPU


def test_cli_min_speedup_gate_fails(model_files):
    result = _invoke("bench", model_files["original"], model_files["pruned"], "--provider", "cpu",
                     "--warmup", "0", "--iterations", "2", "--min-speedup", "1000")
    line = _one_line_error(result, 1, "--min-speedup 1000", model_files["pruned"], "p50 speedup")
    assert "at batch 1" in line
    assert "FAILED" in result.stdout


def test_cli_min_speedup_needs_two_models(model_files):
    result = _invoke("bench", model_files["original"], "--min-speedup", "1.5")
    _one_line_error(result, 2, "--min-speedup needs at least two models")


def test_cli_dynamic_non_batch_dim_is_bad_input(model_files):
    result = _invoke("bench", model_files["dynamic"], "--provider", "cpu", "--iterations", "1")
    _one_line_error(result, 2, "dynamic dimension 'S' at axis 2")


def test_static_batch_mismatch_is_bad_input():
    with pytest.raises(OnnxPruneError, match="static batch size 4"):
        bench_models([conv_classifier(batch=4)], provider="cpu", batches=(2,), iterations=1)


def test_cli_bad_arguments(model_files):
    both = _invoke("bench", model_files["original"], "--iterations", "2", "--duration", "1")
    _one_line_error(both, 2, "either --iterations or --duration")
    batches = _invoke("bench", model_files["original"], "--batch", "1,x")
    _one_line_error(batches, 2, "'--batch'", "expected batch sizes", "'1,x'")
    zero = _invoke("bench", model_files["original"], "--batch", "0")
    _one_line_error(zero, 2, "'--batch'", "positive batch sizes")


def test_unloadable_model_is_bad_input():
    model = conv_classifier()
    model.ir_version = 99  # newer than any onnxruntime reads
    with pytest.raises(OnnxPruneError, match="onnxruntime cannot load the model") as info:
        create_session(model, provider="cpu")
    assert info.value.exit_code == 2


def test_import_stays_free_of_onnxruntime():
    code = "import sys, onnxprune.cli, onnxprune.api, onnxprune.runtime; print('onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"



def test_io_binding_matches_plain_run():
    from onnxprune.runtime.bench import io_binding, random_inputs

    session = create_session(conv_classifier(), provider="cpu")
    feeds = random_inputs(session, 2)
    binding = io_binding(session, feeds, "cpu")  # the CUDA path's binding code, on the CPU device
    session.session.run_with_iobinding(binding)
    bound = binding.copy_outputs_to_cpu()[0]
    plain = session.session.run(None, feeds)[0]
    assert bound.shape == (2, 5)
    np.testing.assert_allclose(bound, plain, rtol=1e-6)
