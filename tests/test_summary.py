"""analyze's parameter count: weights only, the same for both exporters of one model."""

from __future__ import annotations

from pathlib import Path

import pytest

from onnxprune.api import analyze

MODELS = Path(__file__).resolve().parent.parent / "models"


@pytest.mark.parametrize("name", ["vgg", "resnet", "mobilenetv2"])
def test_params_agree_across_exporters_and_skip_scalars(name):
    torchscript = analyze(MODELS / f"{name}.onnx")
    dynamo = analyze(MODELS / f"{name}_dynamo.onnx")
    # TorchScript keeps ReLU6 bounds as 22 scalar Constant nodes, dynamo as 2 shared scalars:
    # neither is a parameter, so both exports of a model count the same weights
    assert torchscript["params"] == dynamo["params"] > 0
    assert torchscript["macs"] == dynamo["macs"]
