"""Data-free synthesis in batches: bounded batches, progress, BN statistics matched, and the
folded-BN case (plain noise, said so)."""

from __future__ import annotations

import numpy as np
import torch

from archs import Builder
from onnxprune.gates import synthetic
from onnxprune.gates.executor import TorchGraph
from onnxprune.gates.synthetic import _bn_loss, _bn_targets, synthesize


def _bn_model():
    b = Builder(seed=2)
    x = b.input("x", ["N", 3, 8, 8])
    y = b.op("Relu", [b.bn(b.conv(x, 3, 6, bias=False), 6)])
    y = b.op("Relu", [b.bn(b.conv(y, 6, 8, bias=False), 8)])
    y = b.op("Flatten", [b.op("GlobalAveragePool", [y])])
    return b.model([b.gemm(y, 8, 4)])


def _folded_model():
    b = Builder(seed=3)
    x = b.input("x", ["N", 3, 8, 8])
    y = b.op("Flatten", [b.op("GlobalAveragePool", [b.op("Relu", [b.conv(x, 3, 6)])])])
    return b.model([b.gemm(y, 6, 4)])


def test_folded_batchnorm_gives_the_same_noise_as_before_and_says_what_it_matches():
    x, how = synthesize(_folded_model(), (3, 8, 8), samples=40, seed=5, batch_size=8)
    want = torch.randn((40, 3, 8, 8), generator=torch.Generator().manual_seed(5)).numpy()
    np.testing.assert_array_equal(x, want)
    assert "folded" in how and "no internal statistics" in how
    assert "fold" in synthetic.__doc__ and "folded away" in synthesize.__doc__


def _record_batch_sizes(monkeypatch) -> list[int]:
    """The batch size of every forward pass of the executor, in order."""
    sizes = []
    original = TorchGraph.forward_with

    def forward_with(self, inputs, capture):
        sizes.append(inputs.shape[0])
        return original(self, inputs, capture)

    monkeypatch.setattr(TorchGraph, "forward_with", forward_with)
    return sizes


def test_batches_are_bounded_and_report_progress(monkeypatch):
    sizes = _record_batch_sizes(monkeypatch)
    calls = []
    x, how = synthesize(_bn_model(), (3, 8, 8), samples=20, steps=3, batch_size=8,
                        progress=lambda done, total, label: calls.append((done, total, label)))
    assert x.shape == (20, 3, 8, 8) and np.isfinite(x).all()
    assert sizes == [1, 2] + [8] * 3 + [8] * 3 + [4] * 3  # two probes of the step's memory
    assert [c[0] for c in calls] == list(range(1, 10)) and {c[1] for c in calls} == {9}
    assert calls[-1][2] == "batch 3/3"
    assert "batches of 8" in how and "2 BatchNormalization" in how


def test_synthesis_moves_each_batch_towards_the_running_statistics():
    model = _bn_model()
    targets = _bn_targets(model)
    graph = TorchGraph(model).float()
    names = {t[0] for t in targets}

    def loss(x):
        with torch.no_grad():
            return float(_bn_loss(graph.forward_with(torch.as_tensor(x), names)[1], targets))

    noise, _ = synthesize(model, (3, 8, 8), samples=32, steps=0)
    made, _ = synthesize(model, (3, 8, 8), samples=32, steps=60, batch_size=16)
    assert loss(made[:16]) < 0.5 * loss(noise[:16])
    assert loss(made[16:]) < 0.5 * loss(noise[16:])


def test_count_is_the_older_name_of_samples():
    x, _ = synthesize(_folded_model(), (3, 8, 8), count=7)
    assert len(x) == 7


def test_the_batch_shrinks_to_fit_the_memory_budget(monkeypatch):
    model = _bn_model()
    graph = TorchGraph(model).float()
    targets = _bn_targets(model)
    names = {t[0] for t in targets}
    one, two = (synthetic._saved_bytes(graph, (3, 8, 8), names, targets, n, "cpu")
                for n in (1, 2))
    per_sample, fixed = two - one, 2 * one - two
    assert per_sample > 0 and synthetic._saved_bytes(
        graph, (3, 8, 8), names, targets, 5, "cpu") == fixed + 5 * per_sample
    sizes = _record_batch_sizes(monkeypatch)
    x, how = synthesize(model, (3, 8, 8), samples=10, steps=1, batch_size=8,
                        memory_budget=fixed + 3 * per_sample + per_sample // 2)
    assert sizes[2:] == [3, 3, 3, 1] and "batches of 3" in how and x.shape == (10, 3, 8, 8)
    sizes.clear()
    synthesize(model, (3, 8, 8), samples=10, steps=1, batch_size=8, memory_budget=0)
    assert sizes[2:] == [1] * 10  # never below one sample
