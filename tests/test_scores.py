"""Score helpers: uniform allocation within groups, per-channel MACs, the MAC discount."""

from __future__ import annotations

import numpy as np

from onnxprune.analysis.groups import analyze_channels
from onnxprune.scores import channel_macs, discount_by_macs, uniform_within_groups
from onnxprune.select import select
from archs import Builder


def _cnn():
    """Conv 3→8 (8×8) → Relu → Conv 8→16 stride 2 → Relu → GAP → Flatten → Gemm 16→4."""
    b = Builder(seed=1)
    x = b.input("x", ["N", 3, 8, 8])
    y = b.op("Relu", [b.conv(x, 3, 8)])
    y = b.op("Relu", [b.conv(y, 8, 16, stride=2)])
    y = b.op("Flatten", [b.op("GlobalAveragePool", [y])])
    return b.model([b.gemm(y, 16, 4)])


def _groups(analysis):
    return [g for g in analysis.groups if g.prunable]


def test_uniform_scores_prune_every_group_by_the_same_fraction_in_score_order():
    analysis = analyze_channels(_cnn())
    raw = np.random.default_rng(0).random(analysis.total_channels)
    g8, g16 = _groups(analysis)
    raw[g16.offset:g16.offset + g16.channels] *= 1e-3  # raw: g16 would go first
    scores = uniform_within_groups(analysis, raw)
    for g in (g8, g16):
        part, before = (s[g.offset:g.offset + g.channels] for s in (scores, raw))
        assert np.array_equal(np.argsort(part), np.argsort(before))
        assert part.max() == 1.0 and part.min() == 1.0 / g.channels
    keep = select(analysis, scores, 0.5).keep
    fractions = [keep[g.offset:g.offset + g.channels].mean() for g in (g8, g16)]
    assert abs(fractions[0] - fractions[1]) <= 0.2, fractions
    raw_keep = select(analysis, raw, 0.5).keep
    assert raw_keep[g16.offset:g16.offset + g16.channels].mean() < 0.5  # not so without it


def test_channel_macs_is_the_saving_of_one_channel_and_discounting_follows_it():
    analysis = analyze_channels(_cnn())
    g8, g16 = _groups(analysis)
    every = np.ones(analysis.total_channels, dtype=bool)
    for g in (g8, g16):
        one = every.copy()
        one[g.offset + 3] = False
        expected = analysis.macs(every) - analysis.macs(one)
        assert np.allclose(channel_macs(analysis)[g.offset:g.offset + g.channels], expected)
    # conv1's channel: 3·9·64 (its own output) + 16·9·16 (conv2 reads it) = 4032 MACs
    assert channel_macs(analysis)[g8.offset] == 3 * 9 * 64 + 16 * 9 * 16
    scores = np.ones(analysis.total_channels)
    discounted = discount_by_macs(analysis, scores, 1.0)
    assert np.allclose(discounted, 1.0 / np.maximum(channel_macs(analysis), 1.0))
    assert np.array_equal(discount_by_macs(analysis, scores, 0.0), scores)
