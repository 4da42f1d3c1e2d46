"""compress reports figures a user can trust: held out by construction, small sets fail closed,
synthetic inputs never pass a gate; --exclude leaves layers bit-identical; --bench flags slowdowns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from onnxprune.cli import main
from onnxprune.pipeline import CompressConfig, compress

ROOT = Path(__file__).resolve().parent.parent
VGG = ROOT / "models" / "vgg.onnx"
TRAIN = ROOT / "models" / "mnist_train.npz"


@pytest.fixture(scope="module")
def twenty(tmp_path_factory) -> Path:
    """20 labelled images: the user's whole --data."""
    path = tmp_path_factory.mktemp("twenty") / "d.npz"
    train = np.load(TRAIN)
    np.savez(path, x=train["x"][:20], y=train["y"][:20])
    return path


def _run(tmp_path, data, *extra):
    report = tmp_path / "r.json"
    argv = ["compress", str(VGG), "--data", str(data), "-o", str(tmp_path / "o.onnx"),
            "--report", str(report), "--iterations", "3", "--batch-size", "8", "--quiet", *extra]
    result = CliRunner().invoke(main, argv)
    return result, (json.loads(report.read_text()) if report.exists() else None)


def test_figures_are_measured_on_a_held_out_part_only(tmp_path, twenty):
    result, report = _run(tmp_path, twenty)
    assert result.exit_code == 0, result.output
    ev = report["evaluation"]
    held, trained = set(ev["indices"]), set(ev["training_indices"])
    calibrated = set(ev["calibration_indices"])
    assert held and trained and calibrated
    assert held.isdisjoint(trained) and held.isdisjoint(calibrated)
    assert calibrated <= trained and held | trained == set(range(20))
    assert report["validation"]["samples"] == len(held) == ev["samples"]
    assert "held-out" in report["validation"]["data"]
    assert report["validation"]["evidence"]["small"]


def test_min_agreement_fails_closed_on_a_set_too_small(tmp_path, twenty):
    result, report = _run(tmp_path, twenty, "--min-agreement", "0.0")
    assert result.exit_code == 1, result.output  # agreement >= 0 holds, yet 2 samples prove nothing
    assert "too few for --min-agreement" in result.stderr
    assert report["validation"]["passed"] is False
    result, report = _run(tmp_path, twenty, "--min-agreement", "0.0", "--allow-small-eval")
    assert result.exit_code == 0, result.output


def test_synthetic_figures_cannot_pass_a_gate(tmp_path):
    report = compress(CompressConfig(model=str(VGG), output=str(tmp_path / "o.onnx"), target=0.5,
                                     iterations=2, batch_size=8, calibration_samples=32,
                                     quiet=True, min_agreement=0.0, allow_small_eval=True))
    validation = report["validation"]
    assert validation["evidence"]["synthetic"] and "synthetic" in validation["data"]
    assert not validation["passed"]
    assert any("synthetic inputs" in f for f in validation["failures"])


def _initializers(path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def _conv_weights(model) -> dict[str, str]:
    """conv node name -> its weight initializer."""
    return {n.name: n.input[1] for n in model.graph.node if n.op_type == "Conv"}


def test_exclude_keeps_the_named_layers_bit_identical(tmp_path, twenty):
    convs = _conv_weights(onnx.load(str(VGG)))
    name = sorted(convs)[len(convs) // 2]  # a middle conv: both its input and output are prunable
    result, report = _run(tmp_path, TRAIN, "--exclude", name, "--limit", "256", "--target", "0.6")
    assert result.exit_code == 0, result.output
    before, after = _initializers(VGG), _initializers(tmp_path / "o.onnx")
    weight = convs[name]
    assert after[weight].dtype == before[weight].dtype
    assert np.array_equal(after[weight], before[weight])  # bit-identical: not sliced, not refit
    excluded = report["excluded"]
    assert excluded[0]["pattern"] == name and excluded[0]["nodes"] == [name]
    rows = {g["id"]: g for g in report["groups"]}
    assert len(excluded[0]["groups"]) == 2  # its input and its output channels
    for group in excluded[0]["groups"]:
        assert rows[group]["kept"] == rows[group]["total"] and "excluded by the user" in rows[group]["reason"]
    assert report["macs_ratio"] <= 0.6
    others = [g for g in report["groups"] if g["id"] not in excluded[0]["groups"]]
    assert any(g["kept"] < g["total"] for g in others)  # the rest is still pruned


def test_exclude_pattern_matching_nothing_is_refused(tmp_path, twenty):
    result, _ = _run(tmp_path, twenty, "--exclude", "no_such_layer*")
    assert result.exit_code == 2
    assert "--exclude 'no_such_layer*' matches no node" in result.stderr
    assert not (tmp_path / "o.onnx").exists()


def test_round_to_auto_is_the_default_and_stays_under_the_target(tmp_path, twenty):
    result, report = _run(tmp_path, TRAIN, "--limit", "256")
    assert result.exit_code == 0, result.output
    assert report["settings"]["round_to"] == "auto"
    multiples = report["round_to"]["groups"]
    assert multiples and set(multiples.values()) == {8}
    rows = {g["id"]: g for g in report["groups"]}
    for group_id in multiples:
        assert rows[group_id]["kept"] % 8 == 0
    assert report["macs_ratio"] <= 0.5
