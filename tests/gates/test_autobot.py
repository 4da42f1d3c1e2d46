"""AutoBot gate training: the paper's loss terms, soft MACs equal to the hard count, gates that
act exactly like the surgery, frozen weights, and training that moves towards the target."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from onnxprune.analysis.groups import analyze_channels
from onnxprune.analysis.summary import count_macs
from onnxprune.gates.autobot import (GateConfig, GatedGraph, bool_loss, flops_loss, task_loss,
                                     train_gates)
from onnxprune.select import MacCounter
from onnxprune.surgery import prune_model
from archs import Builder, run_ort


def _residual_cnn() -> onnx.ModelProto:
    """Stem conv → Relu → (conv → Relu → conv) + stem → Relu → conv → GAP → Gemm: a residual
    group read in two places, and two plain groups."""
    b = Builder(seed=7)
    x = b.input("x", ["N", 2, 6, 6])
    stem = b.op("Relu", [b.conv(x, 2, 6)])
    inner = b.op("Relu", [b.conv(stem, 6, 5)])
    y = b.op("Relu", [b.op("Add", [b.conv(inner, 5, 6), stem])])
    y = b.op("Relu", [b.conv(y, 6, 7)])
    y = b.op("Flatten", [b.op("GlobalAveragePool", [y])])
    return b.model([b.gemm(y, 7, 3)])


@pytest.fixture(scope="module")
def model():
    return _residual_cnn()


def test_flops_loss_is_the_papers_piecewise_form():
    target, maximum = 40.0, 100.0
    above = flops_loss(torch.tensor(70.0), target, maximum)
    below = flops_loss(torch.tensor(30.0), target, maximum)
    assert float(above) == pytest.approx((70 - 40) / (100 - 40))
    assert float(below) == pytest.approx(1 - 30 / 40)
    assert float(flops_loss(torch.tensor(40.0), target, maximum)) == pytest.approx(0.0)
    assert float(flops_loss(torch.tensor(100.0), target, maximum)) == pytest.approx(1.0)


def test_bool_loss_is_zero_for_binary_gates_and_a_half_at_one_half(model):
    gated = GatedGraph(model, analyze_channels(model))
    with torch.no_grad():
        gated.alpha.copy_(torch.where(torch.arange(len(gated.alpha)) % 2 == 0, 40.0, -40.0))
    assert float(bool_loss(gated).detach()) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        gated.alpha.zero_()
    assert float(bool_loss(gated).detach()) == pytest.approx(0.5)


def test_task_loss_uses_labels_else_distils_the_teacher():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 1])
    assert float(task_loss(logits, labels, None)) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, labels)))
    assert float(task_loss(logits, None, logits.clone())) == pytest.approx(0.0, abs=1e-7)
    assert float(task_loss(logits, None, logits.flip(1))) > 0.1
    regression = torch.tensor([[1.0], [2.0]])
    assert float(task_loss(regression, None, regression + 1)) == pytest.approx(1.0)


def test_soft_macs_equal_the_hard_count_of_the_pruned_graph(model):
    analysis = analyze_channels(model)
    gated = GatedGraph(model, analysis)
    assert gated.macs_before == count_macs(model)
    rng = np.random.default_rng(0)
    keep = np.ones(analysis.total_channels, dtype=bool)
    for g in analysis.groups:
        if g.prunable:
            drop = rng.choice(g.channels, size=g.channels // 2, replace=False)
            keep[g.offset + drop] = False
    with torch.no_grad():
        gated.alpha.copy_(torch.as_tensor(np.where(keep[gated.prunable], 60.0, -60.0)))
    plan = {g.id: np.flatnonzero(keep[g.offset:g.offset + g.channels]).tolist()
            for g in analysis.groups if g.prunable}
    pruned_macs = count_macs(prune_model(model, plan))
    assert pruned_macs < gated.macs_before
    assert float(gated.soft_macs()) == pytest.approx(pruned_macs, rel=1e-9)
    assert MacCounter(analysis).macs(keep) == pruned_macs


def test_zero_gates_compute_exactly_what_the_surgery_keeps(model):
    """Gates at 0/1 applied at every read equal the pruned graph (the residual group
    included), so training sees the network the surgery will produce."""
    analysis = analyze_channels(model)
    gated = GatedGraph(model, analysis)
    keep = np.ones(analysis.total_channels, dtype=bool)
    plan = {}
    for g in analysis.groups:
        if g.prunable:
            keep[g.offset] = False
            plan[g.id] = list(range(1, g.channels))
    with torch.no_grad():
        gated.alpha.copy_(torch.as_tensor(np.where(keep[gated.prunable], 80.0, -80.0)))
    x = np.random.default_rng(1).standard_normal((4, 2, 6, 6)).astype(np.float32)
    with torch.no_grad():
        got = gated.forward(torch.as_tensor(x)).numpy()
        ungated = gated.forward(torch.as_tensor(x), gated=False).numpy()
    (want,) = run_ort(prune_model(model, plan), {"x": x})
    (original,) = run_ort(model, {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ungated, original, rtol=1e-4, atol=1e-5)
    assert not np.allclose(want, original, atol=1e-3)


def test_training_moves_the_soft_macs_to_the_target_and_keeps_weights_frozen(model):
    analysis = analyze_channels(model)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((256, 2, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, 256)
    before = model.SerializeToString()
    config = GateConfig(iterations=60, batch_size=32, keep_best_after=0.6)
    result = train_gates(model, analysis, x, y, 0.5, config)
    assert model.SerializeToString() == before
    first, last = result.history[0], result.history[-1]
    assert first["macs_ratio"] > 0.7  # λ starts at 0.9
    assert abs(last["macs_ratio"] - 0.5) < 0.1
    assert 36 <= result.best_iteration <= 60
    fixed = ~analysis.prunable_mask()
    assert np.all(result.gates[fixed] == 1.0)
    assert result.gates[analysis.prunable_mask()].max() < 0.9  # every gate left its start


def test_training_is_deterministic_for_a_seed(model):
    analysis = analyze_channels(model)
    x = np.random.default_rng(3).standard_normal((64, 2, 6, 6)).astype(np.float32)
    config = GateConfig(iterations=8, batch_size=16, seed=4)
    a = train_gates(model, analysis, x, None, 0.5, config)
    b = train_gates(model, analysis, x, None, 0.5, config)
    np.testing.assert_array_equal(a.gates, b.gates)
