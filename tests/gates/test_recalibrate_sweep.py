"""The one-sweep recalibration against today's per-layer implementation (issue 13).

``recalibrate_reference`` is a verbatim copy of the implementation that rebuilt the pruned
graph's executor for every layer. On the reference models (plain chain, residual adds with
strided shortcuts, depthwise convs, Gemm heads, both exporters) and in both modes, the sweep
must give the same records (layer, how, ridge) and the same weights within float tolerance,
also when its activation cache is spilled to disk and on an uneven last batch.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import recalibrate_reference as reference
from onnxprune.analysis.groups import analyze_channels
from onnxprune.errors import OnnxPruneError
from onnxprune.gates.recalibrate import recalibrate
from onnxprune.gates.sweep import Cache
from onnxprune.graph import ensure_node_names
from onnxprune.pipeline import kept_channels
from onnxprune.scores import baseline_scores
from onnxprune.select import select
from onnxprune.surgery import prune_model

CASES = [("resnet", "reconstruct"), ("resnet", "stats"), ("vgg", "reconstruct"),
         ("vgg", "stats"), ("mobilenetv2", "reconstruct"), ("mobilenetv2", "stats"),
         ("vgg_dynamo", "reconstruct")]


@pytest.fixture(scope="module")
def calibration(models_dir):
    return np.load(models_dir / "mnist_train.npz")["x"][:160]  # batches of 64, 64 and 32


def _setting(models_dir, name: str):
    model = onnx.load(str(models_dir / f"{name}.onnx"))
    ensure_node_names(model)
    analysis = analyze_channels(model)
    scores, _ = baseline_scores("l1", analysis, 0)
    selection = select(analysis, scores, 0.5)
    pruned = prune_model(model, selection.plan(analysis))
    return model, pruned, kept_channels(analysis, selection.keep)


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}


def _assert_same(got, want) -> None:
    (model_a, records_a), (model_b, records_b) = got, want
    assert records_a == records_b
    a, b = _weights(model_a), _weights(model_b)
    assert a.keys() == b.keys()
    for name in a:
        scale = max(1.0, float(np.abs(b[name]).max(initial=0.0)))
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-5 * scale, err_msg=name)
    assert [list(n.input) for n in model_a.graph.node] == [list(n.input) for n in model_b.graph.node]


@pytest.mark.parametrize("name,mode", CASES)
def test_sweep_matches_the_per_layer_reference(models_dir, calibration, name, mode):
    model, pruned, kept = _setting(models_dir, name)
    want = reference.recalibrate(model, pruned, calibration, kept, mode=mode)
    assert want[1], "the case must exercise some layer"
    nodes = {n.name: n for n in model.graph.node}
    if name == "mobilenetv2" and mode == "reconstruct":  # depthwise convs are fitted too
        assert any(a.name == "group" and a.i > 1 for r in want[1]
                   for a in nodes[r["layer"]].attribute)
    assert any(nodes[r["layer"]].op_type == "Gemm" for r in want[1])
    calls = []
    got = recalibrate(model, pruned, calibration, kept, mode=mode, device="cpu",
                      progress=lambda done, total, label: calls.append((done, total, label)))
    _assert_same(got, want)
    assert calls and calls[-1][0] == calls[-1][1] and [c[0] for c in calls] == \
        list(range(1, calls[-1][1] + 1))


def test_a_spilled_cache_gives_the_same_result(models_dir, calibration, monkeypatch):
    model, pruned, kept = _setting(models_dir, "resnet")
    want = recalibrate(model, pruned, calibration, kept)
    spills = []
    original_put = Cache.put

    def put(self, tensor):
        entry = original_put(self, tensor)
        spills.append(isinstance(entry[0], str))
        return entry

    monkeypatch.setattr(Cache, "put", put)
    got = recalibrate(model, pruned, calibration, kept, memory_budget=0)
    assert spills and all(spills)
    _assert_same(got, want)


def test_batch_size_is_the_streaming_batch(models_dir, calibration):
    model, pruned, kept = _setting(models_dir, "vgg")
    want = reference.recalibrate(model, pruned, calibration, kept, batch=32)
    _assert_same(recalibrate(model, pruned, calibration, kept, batch_size=32), want)


def test_a_cuda_request_without_cuda_is_a_user_error(models_dir, calibration, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model, pruned, kept = _setting(models_dir, "vgg")
    with pytest.raises(OnnxPruneError) as err:
        recalibrate(model, pruned, calibration[:8], kept, device="cuda")
    assert err.value.exit_code == 2 and "\n" not in str(err.value)


def test_frozen_layers_keep_their_weights_bit_for_bit(models_dir, calibration):
    model, pruned, kept = _setting(models_dir, "vgg")
    _, records = recalibrate(model, pruned, calibration, kept)
    name = records[0]["layer"]
    fixed, frozen_records = recalibrate(model, pruned, calibration, kept, frozen={name})
    assert name not in [r["layer"] for r in frozen_records] and frozen_records
    node = next(n for n in pruned.graph.node if n.name == name)
    before, after = _weights(pruned), _weights(fixed)
    for weight in node.input[1:]:
        np.testing.assert_array_equal(after[weight], before[weight])
