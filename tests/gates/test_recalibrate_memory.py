"""Recalibration within --memory-budget: lazy calibration inputs indexed one batch at a time,
fits built in chunks of samples, the spill folder removed also on an error (issue 13)."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import recalibrate_reference as reference
from onnxprune.analysis.groups import analyze_channels
from onnxprune.gates import recalibrate as recal
from onnxprune.gates.recalibrate import recalibrate
from onnxprune.gates.sweep import Cache
from onnxprune.graph import ensure_node_names
from onnxprune.pipeline import kept_channels
from onnxprune.scores import baseline_scores
from onnxprune.select import select
from onnxprune.surgery import prune_model


class LazySet:
    """What a streamed dataset offers: len, shape, dtype and x[int array] → a float32 batch."""

    def __init__(self, x: np.ndarray):
        self._x, self.shape, self.dtype, self.calls = x, x.shape, np.dtype(np.float32), []

    def __len__(self) -> int:
        return len(self._x)

    def __getitem__(self, index):
        index = np.asarray(index)
        assert index.dtype.kind == "i" and index.ndim == 1, "index by an int array only"
        self.calls.append(index.tolist())
        return self._x[index].astype(np.float32)

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole calibration set must never be materialised")


@pytest.fixture(scope="module")
def setting(models_dir):
    model = onnx.load(str(models_dir / "resnet.onnx"))
    ensure_node_names(model)
    analysis = analyze_channels(model)
    selection = select(analysis, baseline_scores("l1", analysis, 0)[0], 0.5)
    pruned = prune_model(model, selection.plan(analysis))
    x = np.load(models_dir / "mnist_train.npz")["x"][:100]
    return model, pruned, kept_channels(analysis, selection.keep), x


def _same(got, want) -> None:
    assert got[1] == want[1] and got[1]
    a = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in got[0].graph.initializer}
    b = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in want[0].graph.initializer}
    assert a.keys() == b.keys()
    for name in a:
        scale = max(1.0, float(np.abs(b[name]).max(initial=0.0)))
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-5 * scale, err_msg=name)


def test_lazy_inputs_with_indices_equal_the_reference_on_the_picked_samples(setting):
    model, pruned, kept, x = setting
    pick = np.sort(np.random.default_rng(1).permutation(len(x))[:40])
    want = reference.recalibrate(model, pruned, x[pick], kept, batch=16)
    lazy = LazySet(x)
    got = recalibrate(model, pruned, lazy, kept, batch_size=16, indices=pick)
    _same(got, want)
    # each batch read once (cached for both sweeps), by its indices, never more than a batch
    assert sorted(map(tuple, lazy.calls)) == sorted(
        tuple(pick[s:s + 16].tolist()) for s in range(0, 40, 16))


def test_a_tiny_budget_spills_and_fits_in_chunks_with_the_same_result(setting, monkeypatch):
    model, pruned, kept, x = setting
    want = recalibrate(model, pruned, x[:48], kept, batch_size=24)
    chunks, spills = [], []
    columns, put = recal._columns, Cache.put

    def recording_columns(node, inputs, shape, rows=None):
        chunks.append((node.op_type, inputs.shape[0]))
        return columns(node, inputs, shape, rows)

    def recording_put(self, tensor):
        entry = put(self, tensor)
        spills.append(isinstance(entry[0], str))
        return entry

    monkeypatch.setattr(recal, "_columns", recording_columns)
    monkeypatch.setattr(Cache, "put", recording_put)
    got = recalibrate(model, pruned, x[:48], kept, batch_size=24, memory_budget="200K")
    _same(got, want)
    assert spills and any(spills) and not all(spills)
    assert max(n for op, n in chunks if op == "Conv") < 24
    # the default budget holds a whole batch of these small activations
    chunks.clear()
    recalibrate(model, pruned, x[:48], kept, batch_size=24)
    assert {n for _, n in chunks} == {24}


def test_the_chunk_follows_the_work_budget():
    import torch
    from onnx import helper

    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    x, y = torch.zeros(10, 4, 8, 8), torch.zeros(10, 6, 8, 8)
    per = recal._sample_bytes(node, x, y, (6, 4, 3, 3))
    assert per == 8 * (64 * (2 * 36 + 2 * 6) + 2 * 4 * 64)


def test_the_spill_folder_is_removed_also_on_an_error(setting, monkeypatch, tmp_path):
    import tempfile

    model, pruned, kept, x = setting
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            assert any(p.name.startswith("onnxprune-recalibrate-") for p in tmp_path.iterdir())
            raise KeyboardInterrupt
        return None

    monkeypatch.setattr(recal, "_reconstruct", failing)
    with pytest.raises(KeyboardInterrupt):
        recalibrate(model, pruned, x[:32], kept, batch_size=16, memory_budget=0)
    assert len(calls) == 3 and not os.listdir(tmp_path)


def test_a_bad_budget_is_a_user_error(setting):
    from onnxprune.errors import OnnxPruneError

    model, pruned, kept, x = setting
    with pytest.raises(OnnxPruneError) as err:
        recalibrate(model, pruned, x[:8], kept, memory_budget="lots")
    assert err.value.exit_code == 2
