"""Calibration sized by --memory-budget: what the recalibration sweep caches per sample, and
``compress`` cutting the calibration set to what fits (issue 13)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.compress_data import (MIN_CALIBRATION, SCORE_BATCH, Calibration,
                                     calibration_within_budget)
from onnxprune.gates.executor import TorchGraph
from onnxprune.gates.sweep import activation_bytes
from onnxprune.pipeline import CompressConfig, compress

ROOT = Path(__file__).resolve().parents[2]


def _chain(size: int, widths=(3, 8, 4)) -> onnx.ModelProto:
    """Conv → Relu → Conv at ``size``×``size`` (no padding change: 3×3, pads 1)."""
    rng = np.random.default_rng(0)
    inits, nodes, prev = [], [], "x"
    for i, (cin, cout) in enumerate(zip(widths, widths[1:])):
        w = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1],
                                      name=f"conv{i}"))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        prev = f"r{i}"
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                       ["n", widths[0], size, size])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_activation_bytes_follow_the_live_tensors_and_the_image_area():
    small, large = (activation_bytes(TorchGraph(_chain(s)).float(),
                                     np.zeros((3, s, s), np.float32)) for s in (8, 16))
    assert large == 4 * small  # every activation grows with the area
    widest = 8 * 8 * 8 * 4  # conv0's output, 8 channels of 8×8 float32
    everything = (8 + 8 + 4 + 4) * 8 * 8 * 4
    assert widest <= small < everything  # conv0's output is freed once read


def _config(tmp_path, **kwargs) -> CompressConfig:
    base = dict(model=str(ROOT / "models" / "resnet.onnx"), output=str(tmp_path / "o.onnx"),
                target=0.5, data=str(ROOT / "models" / "mnist_train.npz"), limit=600,
                method="l1", quiet=True, calibration_samples=256)
    base.update(kwargs)
    return CompressConfig(**base)


def test_the_calibration_set_is_cut_to_what_the_budget_holds(tmp_path):
    x = np.load(ROOT / "models" / "mnist_train.npz")["x"][:600]
    model = onnx.load(str(ROOT / "models" / "resnet.onnx"))
    roomy = calibration_within_budget(_config(tmp_path, memory_budget="1G"), model, x)
    assert roomy == Calibration(256, SCORE_BATCH, None)
    sizes = [calibration_within_budget(_config(tmp_path, memory_budget=b), model, x).samples
             for b in ("40M", "20M", "10M", "1M")]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] < 256
    assert sizes[-1] == MIN_CALIBRATION
    note = calibration_within_budget(_config(tmp_path, memory_budget="20M"), model, x).note
    assert f"{sizes[1]} of the 256 requested" in note and "--memory-budget" in note
    off = calibration_within_budget(_config(tmp_path, memory_budget="1M", recalibrate=False),
                                    model, x)
    assert off.samples == 256 and "calibration:" not in (off.note or "")
    tight = calibration_within_budget(_config(tmp_path, memory_budget="1M"), model, x)
    assert 1 <= tight.score_batch < SCORE_BATCH and "refit scores in batches" in tight.note


def test_compress_recalibrates_on_the_samples_that_fit_and_says_so(tmp_path):
    report = tmp_path / "r.json"
    compress(_config(tmp_path, memory_budget="20M", report=str(report)))
    written = json.loads(report.read_text())
    used = len(written["evaluation"]["calibration_indices"])
    assert MIN_CALIBRATION <= used < 256
    assert any(f"calibration: {used} of the 256 requested" in n for n in written["notes"])
    assert written["recalibrated_convs"] > 0


def test_a_fixed_batch_model_is_measured_at_its_batch():
    from onnx import helper as h

    model = _chain(8)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4  # batch fixed at 4
    flat = h.make_node("Reshape", ["r1", "shape"], ["flat"], name="flat")  # [4, -1]: batch 4 only
    model.graph.node.append(flat)
    model.graph.initializer.append(numpy_helper.from_array(np.array([4, -1], np.int64), "shape"))
    model.graph.output[0].name = "flat"
    x = np.zeros((3, 8, 8), np.float32)
    per_sample = activation_bytes(TorchGraph(model).float(), x, 4)
    assert per_sample == activation_bytes(TorchGraph(_chain(8)).float(), x)
    config = CompressConfig(model="m.onnx", output="o.onnx", calibration_samples=64)
    assert calibration_within_budget(config, model, np.zeros((10, 3, 8, 8), np.float32)) \
        == Calibration(64, SCORE_BATCH, None)
