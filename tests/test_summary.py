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


EPOCHS = [
    {"epoch": 1, "steps": 859, "loss": 0.0755, "kd": 0.0547, "ce": 0.2628, "accuracy": 90.86},
    {"epoch": 2, "steps": 1718, "loss": 0.0612, "kd": 0.0431, "ce": 0.2214, "accuracy": 91.02}]


def test_finetune_rows_show_every_stage_and_each_epoch_in_order():
    from onnxprune.report import finetune_rows

    rows = finetune_rows(91.40, 89.42, EPOCHS, 90.71, steps=1718)
    names = [k for k, _ in rows]
    assert names == ["accuracy before pruning", "accuracy after pruning", "fine-tuning epoch 1",
                     "fine-tuning epoch 2", "accuracy after fine-tuning"]
    values = dict(rows)
    assert values["accuracy before pruning"] == "91.40%"
    assert values["accuracy after pruning"] == "89.42% (-1.98 points)"
    assert values["accuracy after fine-tuning"] == "90.71% (-0.69 points) after 1718 steps"
    assert values["fine-tuning epoch 2"] == ("loss 0.0612 (kd 0.0431, ce 0.2214), 1718 steps; "
                                             "held-out 91.02%")


def test_finetune_rows_without_labels_or_held_out_data():
    from onnxprune.report import finetune_rows

    epochs = [{"epoch": 1, "steps": 10, "loss": 0.5, "kd": 0.5, "ce": 0.0}]  # no labels, no eval
    rows = finetune_rows(None, None, epochs, None)
    assert rows == [("fine-tuning epoch 1", "loss 0.5000 (kd 0.5000), 10 steps")]


def test_finetune_summary_table_has_the_per_epoch_rows():
    from onnxprune.finetuning import format_finetune

    report = {"steps": 1718, "world_size": 2, "epochs": EPOCHS, "output": "/tmp/f.onnx",
              "accuracy_before_pruning": 91.4, "accuracy_after_pruning": 89.42,
              "accuracy_after_finetuning": 90.71}
    lines = format_finetune(report).splitlines()
    assert lines[0].split() == ["steps", "1718", "on", "2", "process(es)"]
    assert [line.split("  ")[0] for line in lines[1:]] == [
        "accuracy before pruning", "accuracy after pruning", "fine-tuning epoch 1",
        "fine-tuning epoch 2", "accuracy after fine-tuning", "output"]
    column = len("accuracy after fine-tuning") + 2  # the widest name, then the values, aligned
    assert all(line[column - 1] == " " != line[column] for line in lines)
    assert "held-out 90.86%" in lines[3] and "90.71% (-0.69 points)" in lines[5]
