"""tools/gpu_check.sh without a GPU: its syntax, the fail-fast preflight, and the whole script as
a dry run (GPU_CHECK_DRY=1: the CPU provider on a tiny ResNet)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gpu_check

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "gpu_check.sh"


def test_the_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_preflight_on_the_cpu_runs_a_session():
    found = gpu_check.preflight("cpu")
    assert found["session_providers"][0] == "CPUExecutionProvider"


def test_a_missing_package_fails_fast(monkeypatch):
    monkeypatch.setattr(gpu_check, "NEEDED", ("numpy", "no_such_package_here"))
    with pytest.raises(gpu_check.CheckFailed, match="no_such_package_here"):
        gpu_check.preflight("cuda")


def test_no_cuda_in_torch_is_one_line_exit_2(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "preflight",
                          "--device", "cuda", "--json", str(tmp_path / "p.json")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and not (tmp_path / "p.json").exists()
    assert run.stderr.startswith("gpu_check: torch") and run.stderr.count("\n") == 1


def _pretend_cuda(monkeypatch, available, session_providers):
    import onnxruntime as ort
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "a pretended GPU")
    monkeypatch.setattr(ort, "get_available_providers", lambda: available)

    class Session:
        def __init__(self, model, providers):
            self.asked = providers

        def get_providers(self):
            return session_providers

        def run(self, *args):
            return []

    monkeypatch.setattr(ort, "InferenceSession", Session)


def test_onnxruntime_without_the_cuda_ep_fails_fast(monkeypatch):
    _pretend_cuda(monkeypatch, ["CPUExecutionProvider"], ["CPUExecutionProvider"])
    with pytest.raises(gpu_check.CheckFailed, match="no CUDAExecutionProvider.*ortsite"):
        gpu_check.preflight("cuda")


def test_a_session_that_falls_back_to_the_cpu_fails_fast(monkeypatch):
    _pretend_cuda(monkeypatch, ["CUDAExecutionProvider", "CPUExecutionProvider"],
                  ["CPUExecutionProvider"])
    with pytest.raises(gpu_check.CheckFailed, match="runs on .*CPUExecutionProvider"):
        gpu_check.preflight("cuda")
    _pretend_cuda(monkeypatch, ["CUDAExecutionProvider", "CPUExecutionProvider"],
                  ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert gpu_check.preflight("cuda")["gpu"] == "a pretended GPU"


def test_the_dry_run_writes_every_json(tmp_path):
    env = dict(os.environ, GPU_CHECK_DRY="1", GPU_CHECK_DEST=str(tmp_path), PYTHON=sys.executable,
               TMPDIR=str(tmp_path))
    env.pop("OUT", None)
    run = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    files = {p.name for p in tmp_path.glob("*.json")}
    assert files == {"gpu_preflight_dry.json", "compress_resnet50_dry.json",
                     "bench_resnet50_dry.json", "gate_step_dry.json"}
    bench = json.loads((tmp_path / "bench_resnet50_dry.json").read_text())
    assert bench["provider"] == "CPUExecutionProvider" and len(bench["models"]) == 2
    assert bench["settings"]["batches"] == [1, 2]
    compress = json.loads((tmp_path / "compress_resnet50_dry.json").read_text())
    assert compress["compress"]["rc"] == 0 and compress["compress"]["wall_s"] > 0
    assert compress["report"]["macs_after"] < compress["report"]["macs_before"]
    assert compress["compress"]["peak_rss_mb"] > 0 and "--device" in compress["compress"]["command"]
    step = json.loads((tmp_path / "gate_step_dry.json").read_text())
    assert step["device"] == "cpu" and step["executor_ms"] > 0 and step["native_ms"] > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("gpu_check.")]  # cleaned up
    assert "gpu_check: done" in run.stderr
