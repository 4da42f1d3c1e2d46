"""Refit selection in rounds (``iterative_refit_scores``): banded scores whose selection drops the
earlier rounds' channels first, channels of the pruned model mapped back to the original's."""

from __future__ import annotations

import numpy as np
import onnx

from onnxprune.analysis.groups import analyze_channels
from onnxprune.gates.refit_select import _map_channels, iterative_refit_scores, refit_scores
from onnxprune.select import select
from onnxprune.surgery import prune_model
from archs import Builder


def _residual() -> onnx.ModelProto:
    """stem Conv 3→8 → Relu → (Conv 8→6 → Relu → Conv 6→8) + stem → Relu → GAP → Gemm 8→4."""
    b = Builder(seed=3)
    x = b.input("x", ["N", 3, 8, 8])
    stem = b.op("Relu", [b.conv(x, 3, 8)])
    y = b.op("Relu", [b.conv(stem, 8, 6)])
    y = b.op("Relu", [b.op("Add", [b.conv(y, 6, 8), stem])])
    y = b.op("Flatten", [b.op("GlobalAveragePool", [y])])
    return b.model([b.gemm(y, 8, 4)])


def _x(n=64, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)


def test_one_round_is_the_plain_refit_selection():
    model = _residual()
    analysis = analyze_channels(model)
    np.testing.assert_array_equal(
        iterative_refit_scores(model, analysis, _x(), 0.5, rounds=1, samples=64),
        refit_scores(model, analysis, _x(), samples=64))


def test_rounds_band_the_scores_and_the_selection_drops_the_first_round_first():
    model = _residual()
    analysis = analyze_channels(model)
    target = 0.4
    scores = iterative_refit_scores(model, analysis, _x(), target, rounds=2, samples=64)
    assert np.isfinite(scores).all()
    first = select(analysis, refit_scores(model, analysis, _x(), samples=64), target ** 0.5)
    prunable = analysis.prunable_mask()
    dropped_first = ~first.keep & prunable
    assert dropped_first.any()
    assert ((scores[dropped_first] >= 1) & (scores[dropped_first] < 2)).all()
    assert (scores[first.keep] >= 2).all()  # the second round's: above the first band
    final = select(analysis, scores, target)
    assert not (final.keep & dropped_first).any()
    assert final.macs <= target * final.macs_before


def test_channels_of_the_pruned_model_map_back_by_the_groups_sources():
    model = _residual()
    analysis = analyze_channels(model)
    keep = np.ones(analysis.total_channels, dtype=bool)
    rng = np.random.default_rng(1)
    for g in analysis.groups:
        if g.prunable:
            keep[g.offset + rng.choice(g.channels, g.channels // 2, replace=False)] = False
    plan = {g.id: np.flatnonzero(keep[g.offset:g.offset + g.channels]).tolist()
            for g in analysis.groups if g.prunable}
    pruned = prune_model(model, plan, analysis=analyze_channels(model))
    new, where = _map_channels(pruned, analysis, keep)
    assert new.total_channels == int(keep.sum())
    np.testing.assert_array_equal(np.sort(where), np.flatnonzero(keep))
    by_source = {s: g for g in analysis.groups for s in g.sources}
    for g2 in new.groups:
        g = by_source[g2.sources[0]]
        part = where[g2.offset:g2.offset + g2.channels]
        assert ((part >= g.offset) & (part < g.offset + g.channels)).all()


def test_a_group_kept_whole_in_the_original_stays_whole_in_later_rounds():
    import dataclasses

    model = _residual()
    analysis = analyze_channels(model)
    frozen = next(g for g in analysis.groups if g.prunable and g.channels == 6)
    analysis = dataclasses.replace(analysis, groups=[
        dataclasses.replace(g, prunable=False, reason="excluded") if g.id == frozen.id else g
        for g in analysis.groups])
    scores = iterative_refit_scores(model, analysis, _x(), 0.5, rounds=3, samples=64)
    final = select(analysis, scores, 0.5)
    assert final.keep[frozen.offset:frozen.offset + frozen.channels].all()
    new, where = _map_channels(model, analysis, np.ones(analysis.total_channels, dtype=bool))
    assert not next(g for g in new.groups if frozen.sources[0] in g.sources).prunable
    np.testing.assert_array_equal(where, np.arange(analysis.total_channels))
