"""Recalibration after pruning: least-squares refit with a cross-validated ridge, stats matching."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from onnxprune.analysis.groups import analyze_channels
from onnxprune.gates.executor import TorchGraph
from onnxprune.gates.recalibrate import RIDGE_GRID, _Normal, choose_ridge, recalibrate
from onnxprune.pipeline import kept_channels
from onnxprune.surgery import prune_model
from archs import Builder, run_ort


def _tiny_cnn() -> onnx.ModelProto:
    """Conv 3→8 → Relu → Conv 8→6 → Relu → GlobalAveragePool → Flatten → Gemm 6→4."""
    b = Builder(seed=3)
    x = b.input("x", ["N", 3, 8, 8])
    y = b.op("Relu", [b.conv(x, 3, 8)])
    y = b.op("Relu", [b.conv(y, 8, 6)])
    y = b.op("Flatten", [b.op("GlobalAveragePool", [y])])
    return b.model([b.gemm(y, 6, 4)])


def _pruned(model):
    """The tiny CNN with channels 1, 4 and 6 of conv1 removed, and the kept indices."""
    analysis = analyze_channels(model)
    group = next(g for g in analysis.groups if g.prunable and g.channels == 8)
    keep = np.ones(analysis.total_channels, dtype=bool)
    keep[group.offset + np.array([1, 4, 6])] = False
    pruned = prune_model(model, {group.id: np.flatnonzero(keep[group.offset:group.offset + 8])
                                 .tolist()})
    return pruned, kept_channels(analysis, keep)


def _mse(model_a, model_b, x) -> float:
    (a,), (b,) = run_ort(model_a, {"x": x}), run_ort(model_b, {"x": x})
    return float(np.mean((a - b) ** 2))


@pytest.fixture(scope="module")
def setting():
    model = _tiny_cnn()
    pruned, kept = _pruned(model)
    rng = np.random.default_rng(0)
    calibration = rng.standard_normal((256, 3, 8, 8)).astype(np.float32)
    held_out = rng.standard_normal((256, 3, 8, 8)).astype(np.float32)
    return model, pruned, kept, calibration, held_out


def test_reconstruction_brings_the_output_back_towards_the_original(setting):
    model, pruned, kept, calibration, held_out = setting
    fixed, records = recalibrate(model, pruned, calibration, kept)
    before, after = _mse(model, pruned, held_out), _mse(model, fixed, held_out)
    assert after < 0.5 * before, (before, after)
    assert [r["layer"] for r in records] == [n.name for n in model.graph.node
                                             if n.op_type in ("Conv", "Gemm")][1:]
    assert all(r["how"] == "reconstruct" and r["ridge"] in RIDGE_GRID for r in records)
    # folded into the weights: the graph keeps its nodes and initializer shapes
    shapes = {t.name: tuple(t.dims) for t in pruned.graph.initializer}
    assert {t.name: tuple(t.dims) for t in fixed.graph.initializer} == shapes
    assert [n.op_type for n in fixed.graph.node] == [n.op_type for n in pruned.graph.node]
    onnx.checker.check_model(fixed, full_check=True)


def test_recalibration_leaves_its_input_model_alone(setting):
    model, pruned, kept, calibration, _ = setting
    before = pruned.SerializeToString()
    recalibrate(model, pruned, calibration, kept)
    assert pruned.SerializeToString() == before


def test_stats_mode_matches_each_channel_mean_and_std(setting):
    model, pruned, kept, calibration, _ = setting
    fixed, records = recalibrate(model, pruned, calibration, kept, mode="stats")
    conv2, gemm = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")][1:]
    assert [(r["layer"], r["how"]) for r in records] == [(conv2.name, "stats"),
                                                         (gemm.name, "stats")]
    for node, channels in ((conv2, 6), (gemm, 4)):
        name = node.output[0]

        def stats(m):
            _, got = TorchGraph(m).forward_with(torch.as_tensor(calibration), {name})
            t = got[name].double().transpose(0, 1).reshape(channels, -1)
            return t.mean(1).numpy(), t.std(1, unbiased=False).numpy()

        (mean_o, std_o), (mean_p, _), (mean_f, std_f) = stats(model), stats(pruned), stats(fixed)
        assert not np.allclose(mean_p, mean_o, atol=1e-3)  # pruning did shift them
        np.testing.assert_allclose(mean_f, mean_o, atol=1e-4)
        np.testing.assert_allclose(std_f, std_o, rtol=1e-4)


def _folds(x: np.ndarray, y: np.ndarray) -> tuple[_Normal, _Normal]:
    folds = (_Normal(), _Normal())
    for index, start in enumerate(range(0, len(x), 16)):
        cols = torch.as_tensor(np.concatenate([x[start:start + 16],
                                               np.ones((len(x[start:start + 16]), 1))], 1))
        folds[index % 2].add(cols[None], torch.as_tensor(y[start:start + 16])[None])
    return folds


def test_normal_equations_give_the_same_error_as_the_residuals():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((64, 5)), rng.standard_normal((64, 2))
    fold = _Normal()
    cols = np.concatenate([x, np.ones((64, 1))], 1)
    fold.add(torch.as_tensor(cols)[None], torch.as_tensor(y)[None])
    w = rng.standard_normal((6, 2))
    direct = float(((cols @ w - y) ** 2).sum())
    assert fold.error(torch.as_tensor(w)[None]) == pytest.approx(direct, rel=1e-9)


def test_cross_validation_picks_a_small_ridge_when_the_data_determine_the_fit():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((512, 6))
    w_true = rng.standard_normal((6, 3))
    folds = _folds(x, x @ w_true + 0.01 * rng.standard_normal((512, 3)))
    prior = torch.zeros(1, 7, 3, dtype=torch.float64)  # far from the truth
    assert choose_ridge(folds, prior) == min(RIDGE_GRID)


def test_cross_validation_picks_a_large_ridge_when_rows_are_too_few():
    """Fewer rows than inputs (a Gemm on few images): the fit would memorise its rows, and the
    prior (the original weights) is the better guess."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((48, 200))
    w_prior = rng.standard_normal((200, 3)) / np.sqrt(200)
    y = x @ w_prior + 0.3 * rng.standard_normal((48, 3))
    folds = _folds(x, y)
    prior = torch.as_tensor(np.concatenate([w_prior, np.zeros((1, 3))], 0))[None]
    assert choose_ridge(folds, prior) >= 1.0


def test_one_calibration_batch_falls_back_to_the_default_ridge():
    from onnxprune.gates.recalibrate import RIDGE

    rng = np.random.default_rng(4)
    x = rng.standard_normal((16, 4))
    folds = _folds(x, x[:, :2])
    assert folds[1].gram is None
    assert choose_ridge(folds, torch.zeros(1, 5, 2, dtype=torch.float64)) == RIDGE


def test_a_layer_whose_input_is_unchanged_is_left_alone(setting):
    model, pruned, kept, calibration, _ = setting
    fixed, _ = recalibrate(model, pruned, calibration, kept)
    first_conv = next(n for n in pruned.graph.node if n.op_type == "Conv")
    inits = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    new = {t.name: numpy_helper.to_array(t) for t in fixed.graph.initializer}
    for name in first_conv.input[1:]:  # its input is the graph input: nothing to correct
        np.testing.assert_array_equal(new[name], inits[name])


def _depthwise_cnn() -> onnx.ModelProto:
    """Conv 3→8 → Relu → depthwise Conv (group 8) → Relu → Conv 8→4: the depthwise conv carries
    conv1's channel group without starting one."""
    b = Builder(seed=5)
    x = b.input("x", ["N", 3, 8, 8])
    y = b.op("Relu", [b.conv(x, 3, 8)])
    y = b.op("Relu", [b.conv(y, 8, 8, group=8)])
    return b.model([b.conv(y, 8, 4, k=1)])


def test_depthwise_outputs_are_matched_to_their_own_original_channels():
    model = _depthwise_cnn()
    analysis = analyze_channels(model)
    group = next(g for g in analysis.groups if g.prunable)
    keep = np.ones(analysis.total_channels, dtype=bool)
    keep[group.offset + np.array([0, 3, 5])] = False
    pruned = prune_model(model, {group.id: [1, 2, 4, 6, 7]})
    kept = kept_channels(analysis, keep)
    depthwise = [n for n in model.graph.node if n.op_type == "Conv"][1]
    np.testing.assert_array_equal(kept[depthwise.output[0]], [1, 2, 4, 6, 7])
    rng = np.random.default_rng(0)
    calibration = rng.standard_normal((128, 3, 8, 8)).astype(np.float32)
    fixed, records = recalibrate(model, pruned, calibration, kept, mode="stats")
    # the depthwise conv reads unchanged channels: nothing to correct, so nothing is touched
    assert depthwise.name not in [r["layer"] for r in records]
    held_out = rng.standard_normal((128, 3, 8, 8)).astype(np.float32)
    reconstructed, records = recalibrate(model, pruned, calibration, kept)
    assert _mse(model, reconstructed, held_out) < 0.5 * _mse(model, pruned, held_out)


def test_a_perturbed_depthwise_conv_is_reconstructed_per_channel():
    """Scale conv1's kept filters so the depthwise conv's input differs: its per-channel least
    squares must undo it (the sliced original is exact up to that scale)."""
    model = _depthwise_cnn()
    pruned = prune_model(model, {analyze_channels(model).groups[0].id: [1, 2, 4, 6, 7]})
    inits = {t.name: t for t in pruned.graph.initializer}
    conv1, depthwise = [n for n in pruned.graph.node if n.op_type == "Conv"][:2]
    for name in conv1.input[1:]:
        inits[name].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(inits[name]) * 0.5,
                                                     name))
    kept = {conv1.output[0]: np.array([1, 2, 4, 6, 7]),
            depthwise.output[0]: np.array([1, 2, 4, 6, 7])}
    x = np.random.default_rng(1).standard_normal((128, 3, 8, 8)).astype(np.float32)
    fixed, records = recalibrate(model, pruned, x, kept)
    assert records[0] == {"layer": depthwise.name, "how": "reconstruct",
                          "ridge": records[0]["ridge"]}
    name = depthwise.output[0]
    _, want = TorchGraph(model).forward_with(torch.as_tensor(x), {name})
    _, got = TorchGraph(fixed).forward_with(torch.as_tensor(x), {name})
    np.testing.assert_allclose(got[name].numpy(), want[name][:, [1, 2, 4, 6, 7]].numpy(),
                               atol=1e-3, rtol=1e-3)
