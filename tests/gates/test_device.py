"""--device for the torch steps: resolve_device, and the CUDA-less error path of each step.

No GPU here, and none is faked: CUDA requests must fail as one-line user errors (exit 2), and
device="cpu" must give exactly the default results.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from archs import Builder
from onnxprune.analysis.groups import analyze_channels
from onnxprune.errors import EXIT_BAD_INPUT, OnnxPruneError
from onnxprune.gates.autobot import train_gates
from onnxprune.gates.config import GateConfig
from onnxprune.gates.device import resolve_device
from onnxprune.gates.synthetic import synthesize


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _model():
    b = Builder(seed=1)
    x = b.input("x", ["N", 2, 6, 6])
    y = b.op("Relu", [b.conv(x, 2, 6)])
    y = b.op("Flatten", [b.op("GlobalAveragePool", [b.op("Relu", [b.conv(y, 6, 4)])])])
    return b.model([b.gemm(y, 4, 3)])


def test_cpu_and_auto_without_cuda(no_cuda):
    assert resolve_device("cpu") == "cpu"
    assert resolve_device(" CPU ") == "cpu"
    assert resolve_device("auto") == "cpu"
    assert resolve_device(None) == "cpu"


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_a_cuda_request_without_cuda_is_one_line_exit_2(no_cuda, name):
    with pytest.raises(OnnxPruneError) as err:
        resolve_device(name)
    assert err.value.exit_code == EXIT_BAD_INPUT
    assert "CUDA is not available" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "mps", ""])
def test_an_unknown_device_is_a_usage_error(name):
    with pytest.raises(OnnxPruneError, match="auto|cpu|cuda") as err:
        resolve_device(name)
    assert err.value.exit_code == EXIT_BAD_INPUT


def test_training_on_cpu_equals_the_default_and_cuda_fails_cleanly(no_cuda):
    model = _model()
    analysis = analyze_channels(model)
    x = np.random.default_rng(0).standard_normal((32, 2, 6, 6)).astype(np.float32)
    config = GateConfig(iterations=4, batch_size=8)
    default = train_gates(model, analysis, x, None, 0.5, config)
    on_cpu = train_gates(model, analysis, x, None, 0.5, config, device="cpu")
    np.testing.assert_array_equal(default.gates, on_cpu.gates)
    with pytest.raises(OnnxPruneError, match="CUDA"):
        train_gates(model, analysis, x, None, 0.5, config, device="cuda")


def test_synthesis_on_cuda_fails_cleanly(no_cuda):
    with pytest.raises(OnnxPruneError, match="CUDA"):
        synthesize(_model(), (2, 6, 6), samples=4, device="cuda:0")
