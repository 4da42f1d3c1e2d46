"""Reconstruction-aware channel scores: the OBS cost equals the refit error, a channel the
others can rebuild scores lowest, every group gets finite scores."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from onnxprune.analysis.groups import analyze_channels
from onnxprune.gates.refit_select import DAMP, _Layer, raw_refit_scores, refit_scores
from onnxprune.scores import l1_scores
from archs import conv_classifier


def _cnn(duplicate: bool) -> onnx.ModelProto:
    """Conv 3→6 → Relu → Conv 6→5 → Relu → GlobalAveragePool → Flatten → Gemm 5→4; with
    ``duplicate``, conv1's channel 4 is 3 × its channel 1 (Relu keeps the factor)."""
    model = conv_classifier(seed=5, hw=8, widths=(6, 5), classes=4)
    if duplicate:
        conv = model.graph.node[0]
        inits = {t.name: t for t in model.graph.initializer}
        w = numpy_helper.to_array(inits[conv.input[1]]).copy()
        bias = numpy_helper.to_array(inits[conv.input[2]]).copy()
        w[4], bias[4] = 3 * w[1], 3 * bias[1]
        inits[conv.input[1]].CopyFrom(numpy_helper.from_array(w, conv.input[1]))
        inits[conv.input[2]].CopyFrom(numpy_helper.from_array(bias, conv.input[2]))
    return model


def _conv1_group(analysis):
    return next(g for g in analysis.groups if g.prunable and g.channels == 6)


def test_a_channel_the_others_rebuild_scores_lowest_though_its_norm_is_largest():
    model = _cnn(duplicate=True)
    analysis = analyze_channels(model)
    x = np.random.default_rng(0).standard_normal((128, 3, 8, 8)).astype(np.float32)
    scores = raw_refit_scores(model, analysis, x, samples=128)
    g = _conv1_group(analysis)
    part = scores[g.offset:g.offset + g.channels]
    assert int(np.argmin(part)) in (1, 4), part
    assert part.min() < 0.1 * np.sort(part)[1], part  # ~free to refit (up to the damping)
    l1 = l1_scores(analysis)[g.offset:g.offset + g.channels]
    assert int(np.argmax(l1)) == 4  # the L1 baseline would keep it first
    assert np.isfinite(scores).all()
    # scores increase along the greedy order within the group: cumulative errors
    assert len(set(part.tolist())) == g.channels
    ranks = refit_scores(model, analysis, x, samples=128, allocation="uniform")
    ranks = ranks[g.offset:g.offset + g.channels]
    assert np.array_equal(np.argsort(ranks), np.argsort(part))  # uniform: same order
    assert sorted(ranks.tolist()) == [(k + 1) / g.channels for k in range(g.channels)]


def test_every_prunable_group_gets_finite_distinct_scores():
    model = _cnn(duplicate=False)
    analysis = analyze_channels(model)
    x = np.random.default_rng(1).standard_normal((64, 3, 8, 8)).astype(np.float32)
    scores = refit_scores(model, analysis, x, samples=64, allocation="macs")
    assert np.isfinite(scores).all() and (scores > 0).all()
    for g in analysis.groups:
        if g.prunable:
            assert len(np.unique(scores[g.offset:g.offset + g.channels])) == g.channels


class _Fake:
    """A layer with a given Gram matrix and weights, without a graph."""

    def __init__(self, h, w, column_channel):
        self.gram, self.w, self.column_channel = h, w, column_channel
        self.fisher, self.rows = None, 0  # relative costs


def test_obs_cost_and_update_equal_the_explicit_least_squares_refit():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 7))
    x[:, 6] = 1.0  # the bias column
    w = rng.standard_normal((3, 7))
    layer = _Fake(torch.as_tensor(x.T @ x), w, np.array([0, 0, 1, 1, 2, 2, -1]))
    names = ("start", "costs", "remove", "_compact", "weights")
    for name in names:
        setattr(layer, name, getattr(_Layer, name).__get__(layer))
    layer.start()
    h = x.T @ x
    h_damped = h + DAMP * np.diag(h).mean() * np.eye(7)
    drop = np.array([2, 3])
    keep = np.setdiff1d(np.arange(7), drop)
    # explicit: min over W' with W'[:, drop] = 0 of (W' − W) H (W' − W)ᵀ
    fit = np.linalg.solve(h_damped[np.ix_(keep, keep)], h_damped[keep] @ w.T).T
    full = np.zeros_like(w)
    full[:, keep] = fit
    explicit = np.trace((full - w) @ h_damped @ (full - w).T)
    energy = np.trace(w @ h @ w.T)
    assert np.isclose(layer.energy, energy, rtol=1e-10)
    cost = float(layer.costs(torch.as_tensor([[2, 3]]))[0])
    assert np.isclose(cost * energy, explicit, rtol=1e-8)
    layer.remove(torch.as_tensor([2, 3]))
    assert layer.wt.shape == (3, 5)  # 2 of 7 columns gone: H⁻¹ and W shrank to the live ones
    assert np.allclose(layer.weights().numpy(), full, atol=1e-8)
    cost = float(layer.costs(torch.as_tensor([[4, 5]]))[0])  # original columns, after shrinking
    keep2 = np.array([0, 1, 6])
    fit2 = np.linalg.solve(h_damped[np.ix_(keep2, keep2)], h_damped[keep2] @ w.T).T
    full2 = np.zeros_like(w)
    full2[:, keep2] = fit2
    second = np.trace((full2 - w) @ h_damped @ (full2 - w).T)
    assert np.isclose(cost * energy, second - explicit, rtol=1e-8)


def test_a_lazy_dataset_gives_the_scores_of_its_array():
    from onnxprune.lazydata import as_lazy

    model = _cnn(duplicate=False)
    x = np.random.default_rng(3).standard_normal((96, 3, 8, 8)).astype(np.float32)
    plain = refit_scores(model, analyze_channels(model), x, samples=64, batch=32)
    lazy = refit_scores(model, analyze_channels(model), as_lazy(x), samples=64, batch=32)
    assert np.array_equal(plain, lazy)


def test_fisher_of_the_logits_layer_is_the_softmax_variance():
    """Labels drawn from the model's softmax: E[(p − e_y)²] = p(1 − p) per class."""
    from onnxprune.gates.executor import TorchGraph
    from onnxprune.gates.refit_fisher import collect_fisher
    from onnxprune.gates.refit_select import _reading_layers

    model = _cnn(duplicate=False)
    analysis = analyze_channels(model)
    x = np.random.default_rng(4).standard_normal((4096, 3, 8, 8)).astype(np.float32)
    layers = _reading_layers(analysis)
    collect_fisher(model, layers, x, 256, "cpu")
    gemm = next(l for l in layers if l.node.op == "Gemm")
    with torch.no_grad():
        p = torch.softmax(TorchGraph(model)(torch.as_tensor(x)), 1).double().numpy()
    expected = (p * (1 - p)).sum(0)
    assert np.allclose(gemm.fisher, expected, rtol=0.08), (gemm.fisher, expected)
    for layer in layers:
        assert layer.fisher.shape == (layer.w.shape[0],) and (layer.fisher >= 0).all()
        assert layer.fisher.sum() > 0


def test_fisher_weighted_cost_is_the_curvature_weighted_refit_error():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((300, 7))
    x[:, 6] = 1.0
    w = rng.standard_normal((3, 7))
    fisher = np.array([0.5, 2.0, 0.1]) * 300
    layer = _Fake(torch.as_tensor(x.T @ x), w, np.array([0, 0, 1, 1, 2, 2, -1]))
    layer.fisher, layer.rows = fisher, 300  # Σ (∂L/∂y_o)² over the 300 rows
    for name in ("start", "costs"):
        setattr(layer, name, getattr(_Layer, name).__get__(layer))
    layer.start()
    h_damped = x.T @ x + DAMP * np.diag(x.T @ x).mean() * np.eye(7)
    keep = np.array([0, 1, 4, 5, 6])
    fit = np.linalg.solve(h_damped[np.ix_(keep, keep)], h_damped[keep] @ w.T).T
    full = np.zeros_like(w)
    full[:, keep] = fit
    per_output = np.diag((full - w) @ h_damped @ (full - w).T)  # Σ over rows of Δy_o²
    cost = float(layer.costs(torch.as_tensor([[2, 3]]))[0])
    assert np.isclose(cost, (fisher / 300 * per_output).sum(), rtol=1e-8)


def test_fisher_weighting_changes_the_scores_and_keeps_them_finite():
    model = _cnn(duplicate=False)
    analysis = analyze_channels(model)
    x = np.random.default_rng(7).standard_normal((64, 3, 8, 8)).astype(np.float32)
    plain = refit_scores(model, analysis, x, samples=64)
    weighted = refit_scores(model, analysis, x, samples=64, weighting="fisher")
    assert np.isfinite(weighted).all() and (weighted > 0).all()
    assert not np.allclose(plain, weighted)


def _choice(candidates, target: float, seed: int):
    """``choose_refit`` on the small CNN: (model, analysis, x, its result, progress seen)."""
    from onnxprune.gates.refit_choice import choose_refit

    model = _cnn(duplicate=False)
    analysis = analyze_channels(model)
    x = np.random.default_rng(8 + seed).standard_normal((192, 3, 8, 8)).astype(np.float32)
    seen = []
    result = choose_refit(model, analysis, x, target, candidates, round_to=None, samples=64,
                          seed=seed, device="cpu", batch=32, progress=seen.append)
    return model, analysis, x, result, seen


def test_auto_weighting_keeps_the_selection_closer_to_the_original():
    from onnxprune.gates.refit_choice import _distance
    from onnxprune.gates.refit_select import iterative_refit_scores

    model, analysis, x, (scores, chosen, distances), seen = _choice(
        [("relative", 2), ("fisher", 2)], 0.5, seed=0)
    assert set(distances) == {"relative/2", "fisher/2"} and chosen[1] == 2
    assert distances[f"{chosen[0]}/2"] == min(distances.values()) > 0
    assert seen == [1, 2, 3, 4]  # both weightings' rounds
    alone = iterative_refit_scores(model, analysis, x, 0.5, rounds=2, samples=64, batch=32,
                                   weighting=chosen[0])
    assert np.array_equal(scores, alone)
    logits = torch.randn(50, 4)
    assert _distance(logits, logits) == 0.0 and _distance(logits, logits.flip(1)) > 0


def test_auto_rounds_keeps_the_round_count_closer_to_the_original():
    """Candidates of different round counts: the winner's scores are that count's, its
    distance the least of those ``held_out_distances`` gives for the same scores."""
    from onnxprune.gates.refit_choice import held_out_distances
    from onnxprune.gates.refit_select import iterative_refit_scores

    model, analysis, x, (scores, chosen, distances), seen = _choice(
        [("relative", 1), ("relative", 3)], 0.4, seed=1)
    assert seen == [1, 2, 3]  # round 1 once (shared by both counts), then rounds 2 and 3
    each = {("relative", r): iterative_refit_scores(model, analysis, x, 0.4, rounds=r,
                                                     samples=64, seed=1, batch=32)
            for r in (1, 3)}
    assert np.array_equal(scores, each[chosen])
    again = held_out_distances(model, analysis, x, 0.4, each, round_to=None, samples=64,
                               seed=1, device="cpu", batch=32)
    assert {f"relative/{c[1]}": round(d, 6) for c, d in again.items()} == distances
    assert again[chosen] == min(again.values())
    assert not np.array_equal(*each.values())  # the candidates differ: a real choice


def test_fisher_without_a_class_axis_backpropagates_unit_noise():
    """An output of one value per sample: ε ~ N(0, 1) on it, so its layer's Σ g² ≈ N."""
    from onnxprune.gates.refit_fisher import collect_fisher
    from onnxprune.gates.refit_select import _reading_layers

    model = conv_classifier(seed=9, hw=8, widths=(6,), classes=1)
    analysis = analyze_channels(model)
    layers = _reading_layers(analysis)
    data = np.random.default_rng(10).standard_normal((2000, 3, 8, 8)).astype(np.float32)
    collect_fisher(model, layers, data, 100, "cpu")
    (gemm,) = [l for l in layers if l.node.op == "Gemm"]
    assert abs(gemm.fisher[0] / 2000 - 1.0) < 0.1
