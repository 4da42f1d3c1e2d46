"""Per-node profile: trace parsing, fused-node → layer mapping, the gap decomposition, and a real
profile of the reference ResNet against a pruned copy."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import onnxprune
from onnxprune.analysis.summary import count_macs, summarize
from onnxprune.errors import OnnxPruneError
from onnxprune.runtime.profile import (OVERHEAD, compare_profiles, explain_gap, kernel_changes,
                                       layer_resolver, parse_trace, profile_models)


@pytest.fixture(scope="module")
def resnet(models_dir):
    return str(models_dir / "resnet.onnx")


@pytest.fixture(scope="module")
def pruned_resnet(resnet):
    """Half of every prunable group's channels kept (the first ones)."""
    groups = [g for g in onnxprune.analyze(resnet)["groups"] if g["prunable"]]
    keep = {g["id"]: list(range(max(1, g["channels"] // 2))) for g in groups}
    return onnxprune.prune(resnet, keep)


@pytest.fixture(scope="module")
def profile(resnet, pruned_resnet):
    return profile_models([resnet, pruned_resnet], provider="cpu", batch=1, runs=5, warmup=2,
                          names=("original", "pruned"))


def _run(start, nodes):
    """One model_run window starting at ``start`` holding ``nodes`` [(name, op, dur)]."""
    events, ts = [], start + 1
    for name, op, dur in nodes:
        events.append({"cat": "Node", "name": f"{name}_fence_before", "ts": ts, "dur": 0})
        events.append({"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur,
                       "args": {"op_name": op}})
        ts += dur + 1
    events.append({"cat": "Session", "name": "model_run", "ts": start, "dur": ts - start + 1})
    return events


def test_parse_trace_takes_medians_after_warmup():
    durations = [(50, 7), (10, 3), (12, 4), (11, 9)]  # run 0 is the warm-up
    events = []
    for i, (a, b) in enumerate(durations):
        events += _run(1000 * i, [("conv", "Conv", a), ("relu", "Relu", b)])
    events.append({"cat": "Node", "name": "late_kernel_time", "ts": 99999, "dur": 5,
                   "args": {"op_name": "Add"}})  # outside every run: ignored
    nodes, total = parse_trace(events, warmup=1)
    assert [n["node"] for n in nodes] == ["conv", "relu"]
    assert [n["op"] for n in nodes] == ["Conv", "Relu"]
    assert nodes[0]["us"] == np.median([a for a, _ in durations[1:]])
    assert nodes[1]["us"] == np.median([b for _, b in durations[1:]])
    runs = [e["dur"] for e in events if e.get("name") == "model_run"][1:]
    assert total == np.median(runs)


def test_parse_trace_without_session_events_sums_nodes():
    events = [e for e in _run(0, [("a", "Conv", 4), ("b", "Gemm", 6)]) if e["cat"] == "Node"]
    nodes, total = parse_trace(events)
    assert total is None and [n["us"] for n in nodes] == [4.0, 6.0]


def test_layer_resolver_maps_fused_nodes_to_their_conv(resnet):
    model = onnx.load(resnet)
    resolve = layer_resolver(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    relu = next(n for n in model.graph.node
                if n.op_type == "Relu" and n.input[0] == convs[1].output[0])
    assert resolve(relu.output[0] + "_nchwc") == convs[1].name  # Conv+Relu named after the Relu
    assert resolve(convs[2].output[0] + "_nchwc") == convs[2].name
    add = next(n for n in model.graph.node if n.op_type == "Add")
    after_add = next(n for n in model.graph.node
                     if n.op_type == "Relu" and n.input[0] == add.output[0])
    first_conv_parent = next(n for n in model.graph.node if n.output[0] in add.input
                             and n.op_type == "Conv")
    assert resolve(after_add.output[0] + "_nchwc") == first_conv_parent.name
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    assert resolve(f"fused {gemm.name}") == gemm.name
    assert resolve(gemm.name) == gemm.name
    flatten = next(n for n in model.graph.node if n.op_type == "Flatten")
    assert resolve(flatten.name) == flatten.name  # not a MAC op: its own layer
    assert resolve("ReorderOutput_token_7") is None  # inserted by onnxruntime


def test_profile_finds_ops_nodes_and_layers(profile, resnet, pruned_resnet):
    assert profile["provider"] == "CPUExecutionProvider"
    assert profile["batch"] == 1 and profile["runs"] == 5
    for entry, model in zip(profile["models"], (onnx.load(resnet), pruned_resnet)):
        assert entry["total_us"] > 0 and entry["kernel_us"] > 0
        assert entry["overhead_us"] == pytest.approx(max(entry["total_us"] - entry["kernel_us"], 0))
        assert {"Conv", "Gemm"} <= set(entry["ops"])
        assert all(n["us"] >= 0 for n in entry["nodes"])
        assert sum(o["us"] for o in entry["ops"].values()) == pytest.approx(entry["kernel_us"])
        mac_nodes = {r["node"] for r in summarize(model)["macs_per_node"]}
        assert {name for name, layer in entry["layers"].items() if layer["macs"]} == mac_nodes
        assert entry["macs"] == count_macs(model)
        assert sum(o["macs"] for o in entry["ops"].values()) == entry["macs"]


def test_comparison_decomposes_the_gap_exactly(profile, resnet, pruned_resnet):
    comparison = profile["comparisons"][0]
    original, pruned = profile["models"]
    f = count_macs(pruned_resnet) / count_macs(onnx.load(resnet))
    assert comparison["mac_fraction"] == pytest.approx(f)
    assert comparison["speedup"] == pytest.approx(original["total_us"] / pruned["total_us"])
    assert sum(r["excess_us"] for r in comparison["ops"]) == pytest.approx(comparison["gap_us"])
    assert comparison["gap_us"] == pytest.approx(pruned["total_us"] - f * original["total_us"])
    assert any(r["op"] == OVERHEAD for r in comparison["ops"])
    conv = next(r for r in comparison["ops"] if r["op"] == "Conv")
    assert conv["mac_ratio"] == pytest.approx(pruned["ops"]["Conv"]["macs"]
                                              / original["ops"]["Conv"]["macs"])
    gap = comparison["gap"]
    assert bool(gap["culprits"]) == (comparison["gap_us"] > 0)
    positive = sum(r["excess_us"] for r in comparison["ops"] if r["excess_us"] > 0)
    if gap["culprits"]:
        assert sum(c["excess_us"] for c in gap["culprits"]) >= 0.8 * positive - 1e-9
        assert all(c["reason"] for c in gap["culprits"])


def _entry(name, total, ops, macs):
    """A hand-made profile entry: ``ops`` {op: (us, macs)}."""
    entry_ops = {op: {"us": us, "nodes": 1, "macs": m} for op, (us, m) in ops.items()}
    kernel = sum(us for us, _ in ops.values())
    nodes = [{"node": f"{op}_node", "op": op, "layer": f"{op}_node" if m else None, "us": us}
             for op, (us, m) in ops.items()]
    layers = {f"{op}_node": {"us": us, "macs": m} for op, (us, m) in ops.items() if m}
    return {"name": name, "macs": macs, "total_us": total, "kernel_us": kernel,
            "overhead_us": total - kernel, "ops": entry_ops, "nodes": nodes, "layers": layers}


def test_explain_gap_names_grown_layout_ops_and_mac_ops():
    # f = 0.5; excess: Conv 70 - 50 = 20, ReorderOutput 3 - 0.5 = 2.5, outside kernels
    # 12 - 9.5 = 2.5. Conv alone covers 80% of the positive excess; ReorderOutput is named
    # because its time grew, the overhead (which shrank) is not.
    original = _entry("a", 120.0, {"Conv": (100.0, 1000), "ReorderOutput": (1.0, 0)}, 1000)
    pruned = _entry("b", 85.0, {"Conv": (70.0, 500), "ReorderOutput": (3.0, 0)}, 500)
    comparison = compare_profiles(original, pruned)
    assert comparison["gap_us"] == pytest.approx(85.0 - 0.5 * 120.0)
    culprits = {c["op"]: c for c in comparison["gap"]["culprits"]}
    assert set(culprits) == {"Conv", "ReorderOutput"}
    assert culprits["Conv"]["excess_us"] == pytest.approx(70.0 - 50.0)
    assert culprits["Conv"]["share_of_gap"] == pytest.approx(20.0 / 25.0)
    assert "70%" in culprits["Conv"]["reason"] and "50%" in culprits["Conv"]["reason"]
    assert culprits["ReorderOutput"]["time_ratio"] == pytest.approx(3.0)
    assert "no MACs" in culprits["ReorderOutput"]["reason"]
    assert "grew to 300%" in culprits["ReorderOutput"]["reason"]
    layer = next(r for r in comparison["layers"] if r["layer"] == "Conv_node")
    assert layer["worse_than_macs"] and layer["mac_ratio"] == pytest.approx(0.5)


def test_explain_gap_is_empty_when_pruned_beats_its_macs():
    original = _entry("a", 100.0, {"Conv": (90.0, 1000)}, 1000)
    pruned = _entry("b", 40.0, {"Conv": (35.0, 500)}, 500)
    comparison = compare_profiles(original, pruned)
    assert comparison["gap_us"] < 0
    assert explain_gap(comparison)["culprits"] == []
    assert not comparison["layers"][0]["worse_than_macs"]


def test_profile_rejects_bad_arguments(resnet):
    with pytest.raises(OnnxPruneError):
        profile_models([resnet], runs=0)
    with pytest.raises(OnnxPruneError):
        profile_models([])


def test_a_layer_that_moves_to_another_kernel_is_named():
    def entry(op, us, macs):
        return {"name": op, "macs": macs, "total_us": us + 10.0, "kernel_us": us,
                "overhead_us": 10.0, "ops": {op: {"us": us, "nodes": 1, "macs": macs}},
                "nodes": [{"node": f"{op} node", "op": op, "layer": "conv1", "us": us}],
                "layers": {"conv1": {"us": us, "macs": macs}}}

    original, pruned = entry("Conv", 100.0, 1000), entry("FusedConv", 80.0, 500)
    assert kernel_changes(original, pruned) == [
        {"layer": "conv1", "original_op": "Conv", "pruned_op": "FusedConv"}]
    assert kernel_changes(original, original) == []
    culprits = compare_profiles(original, pruned)["gap"]["culprits"]
    fused = next(c for c in culprits if c["op"] == "FusedConv")
    assert "1 layer(s) that ran as Conv" in fused["reason"]
