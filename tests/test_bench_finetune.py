"""tools/bench_finetune.py: the from-scratch re-initialisation and the merge of partial rows.

Never trains: it re-initialises the Fashion-MNIST reference graphs and renders synthetic rows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import bench_finetune as bench  # tools/ is put on sys.path by conftest.py

MODELS = Path(__file__).resolve().parents[1] / "models"


def _arrays(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize("name, adds", [("resnet", 5), ("mobilenetv2", 3), ("vgg", 0)])
def test_reinitialised_weights_are_fresh_with_zero_residual_branches(name, adds):
    model = onnx.load(str(MODELS / f"fashion_{name}.onnx"))
    fresh = bench.reinitialised(model, seed=0)
    before, after = _arrays(model), _arrays(fresh)
    assert [n.name for n in fresh.graph.node] == [n.name for n in model.graph.node]
    assert all(before[k].dtype == after[k].dtype and before[k].shape == after[k].shape
               for k in before)
    zeroed = bench.residual_branch_convs(model)
    assert len(zeroed) == adds
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        w, b = after[node.input[1]], after[node.input[2]]
        assert not b.any()
        if node.input[1] in zeroed:
            assert not w.any()
        elif node.op_type == "Conv" and w.size > 500:
            std = math.sqrt(2.0 / math.prod(w.shape[1:]))
            assert abs(w.std() / std - 1) < 0.15  # He-normal, fan-in
        assert not np.array_equal(w, before[node.input[1]])
    onnx.checker.check_model(fresh, full_check=True)


def test_the_residual_branch_is_the_conv_read_by_the_add_alone():
    model = onnx.load(str(MODELS / "fashion_resnet.onnx"))
    producer = {o: n for n in model.graph.node for o in n.output}
    branch = bench.residual_branch_convs(model)
    for node in model.graph.node:
        if node.op_type == "Add":
            convs = [producer[i] for i in node.input if i in producer
                     and producer[i].op_type == "Conv"]
            picked = [c for c in convs if c.input[1] in branch]
            assert len(picked) == 1  # one per Add; with a 1x1 shortcut the 3x3 branch
            kernel = [a.ints for a in picked[0].attribute if a.name == "kernel_shape"][0]
            assert list(kernel) == [3, 3]


def _row(**extra):
    return {"split": "test", "model": "vgg", "target": 0.25, "seed": 0, "epochs": 1, "lr": 0.03,
            "macs_ratio": 0.24, "accuracy_unpruned": 91.0, "accuracy_compress": 86.0,
            "steps": 859, **extra}


def test_partial_rows_of_one_cell_merge_into_one_table_line():
    rows = bench.merge_rows([_row(accuracy_finetuned=90.0)], [_row(accuracy_scratch=80.0)],
                            [_row(target=0.5, macs_ratio=0.49, accuracy_finetuned=90.8)])
    assert len(rows) == 2
    text = bench.table(rows)
    line = [x for x in text.splitlines() if "| 24.0% |" in x][0]
    assert "| 90.00 | — | 80.00 | -1.00 | ≥ −1.5: met |" in line
    assert "| -0.20 | ≥ −0.5: met |" in text
    assert bench.table(rows, "val").count("\n") == 2  # header only: no val rows


def _history(*accuracies):
    return [{"epoch": i + 1, "steps": 859 * (i + 1), "loss": 0.1, "accuracy": a}
            for i, a in enumerate(accuracies)]


def test_settings_variants_are_separate_cells_with_per_epoch_accuracy(tmp_path):
    rows = bench.merge_rows(
        [_row(epochs=3, accuracy_finetuned=90.5, finetune_history=_history(89.0, 90.0, 91.0)),
         _row(epochs=3, variant="optimizer=adamw", accuracy_finetuned=90.1,
              finetune_history=_history(88.5, 89.5, 90.25), compress_method="refit")])
    assert len(rows) == 2
    text = bench.table(rows)
    assert "| defaults | 91.00 | 86.00 | 90.50 | 89.00 / 90.00 / 91.00 |" in text
    assert "| optimizer=adamw | 91.00 | 86.00 (refit) | 90.10 | 88.50 / 89.50 / 90.25 |" in text
    # --table-from: the table of stored rows, written to --table-out, nothing trained
    (tmp_path / "rows.json").write_text(json.dumps({"rows": rows}))
    out = tmp_path / "table.md"
    assert bench.main(["--table-from", str(tmp_path / "rows.json"), "--split", "test",
                       "--table-out", str(out)]) == 0
    assert out.read_text() == text


def test_variant_names_only_the_settings_that_differ_from_the_defaults():
    from onnxprune.gates.config import FinetuneConfig

    defaults = vars(FinetuneConfig())
    assert bench.variant(defaults) == ""
    assert bench.variant({**defaults, "optimizer": "adamw", "augment": True, "lr": 0.5}) == \
        "optimizer=adamw,augment=True"  # lr and epochs are columns of their own
