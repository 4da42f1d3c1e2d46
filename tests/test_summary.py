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


def test_long_names_are_shortened_in_tables_but_full_in_json():
    from onnxprune.report import NAME_WIDTH, format_analysis, short

    long_id = "/model/backbone/" + "stage_block_" * 30 + "conv/Conv_output_0"
    assert len(short(long_id)) == NAME_WIDTH and short(long_id).startswith("/model/backbone/")
    assert short(long_id).endswith("Conv_output_0") and short("c1") == "c1"
    result = {"opset": 17, "nodes": 1, "inputs": [], "outputs": [], "op_counts": {"Conv": 1},
              "params": 1, "macs": 10, "prunable_macs": 10,
              "macs_per_node": [{"node": long_id, "op": "Conv", "macs": 10}],
              "groups": [{"id": long_id, "channels": 8, "prunable": True, "macs": 10}],
              "barriers": []}
    text = format_analysis(result)
    assert long_id not in text and short(long_id) in text
    assert max(len(line) for line in text.splitlines()) < 120
