"""Coupling facts that are not one op family's: unknown ops, graph outputs, ids, global indices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper
from archs import Builder, check_random_plans, head, random_keep, stem

from onnxprune.analysis.groups import analyze_channels, keep_mask
from onnxprune.errors import OnnxPruneError
from onnxprune.surgery import prune_model

ROOT = Path(__file__).resolve().parents[2]


def test_every_rule_family_has_a_differential_test():
    families = {p.stem for p in (ROOT / "onnxprune" / "ops").glob("*.py")} - {"__init__"}
    tests = {p.stem.removeprefix("test_") for p in (ROOT / "tests" / "ops").glob("test_*.py")}
    assert families <= tests, f"rule families without tests: {sorted(families - tests)}"


def _custom_model():
    b = Builder(1)
    y = stem(b, 6)
    z = b.op("MyOp", [y], domain="com.example")
    u = b.op("Relu", [b.conv(y, 6, 4)])
    model = b.model([z, head(b, u, 4)], extra_domains=("com.example",))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info(z, TensorProto.FLOAT, [1, 6, 4, 4]))
    return model, z


def test_unknown_custom_op_is_a_barrier_by_name():
    model, _ = _custom_model()
    a = analyze_channels(model)
    assert a.barriers == [{"op": "MyOp", "node": model.graph.node[2].name,
                           "reason": "op 'MyOp' of domain 'com.example' is not understood by "
                                     "the channel analysis"}]
    assert not a.groups[0].prunable and "MyOp" in a.groups[0].reason
    assert a.groups[1].prunable  # the conv after the stem is not touched
    with pytest.raises(OnnxPruneError, match="not prunable"):
        prune_model(model, {a.groups[0].id: [0, 1]})
    keep = {a.groups[1].id: [0, 3]}
    pruned = prune_model(model, keep)
    assert [n.op_type for n in pruned.graph.node] == [n.op_type for n in model.graph.node]


def test_graph_outputs_are_never_pruned():
    b = Builder(2)
    y = stem(b, 6)
    mid = b.op("Relu", [b.conv(y, 6, 4)])
    out = head(b, mid, 4)
    m = b.model([mid, out])  # an intermediate tensor is also a graph output
    a = analyze_channels(m)
    g = [g for g in a.groups if g.id == b.nodes[2].output[0]][0]
    assert not g.prunable and "graph output" in g.reason
    assert a.groups[0].prunable
    assert not a.groups[-1].prunable and "graph output" in a.groups[-1].reason
    check_random_plans(m, plans=3)


def test_group_ids_are_deterministic_and_readable():
    b = Builder(3)
    y = stem(b, 6)
    m = b.model([head(b, b.op("Relu", [b.conv(y, 6, 4)]), 4)])
    first = [(g.id, g.channels, g.offset, g.sources) for g in analyze_channels(m).groups]
    second = [(g.id, g.channels, g.offset, g.sources) for g in analyze_channels(m).groups]
    assert first == second
    assert [g[0] for g in first] == [b.nodes[0].output[0], b.nodes[2].output[0],
                                     b.nodes[4].output[0]]


def test_keep_mask_is_over_global_channels():
    b = Builder(4)
    y = stem(b, 6)
    m = b.model([head(b, b.op("Relu", [b.conv(y, 6, 4)]), 4)])
    a = analyze_channels(m)
    first, second = a.groups[0], a.groups[1]
    mask = keep_mask(a, {first.id: [1, 3], second.id: [0]})
    assert mask.shape == (a.total_channels,)
    assert np.flatnonzero(~mask).tolist() == [0, 2, 4, 5, 7, 8, 9]
    assert a.macs(mask) < a.macs()
    assert a.macs(keep_mask(a, {})) == a.macs()


def test_macs_formula_counts_kept_channels():
    b = Builder(5)
    x = b.input("x", [1, 2, 4, 4])
    y = b.conv(x, 2, 6, k=1, bias=False)  # 16 * 2 * 6
    z = b.conv(y, 6, 3, k=3)  # 16 * 9 * 6 * 3
    m = b.model([z])
    a = analyze_channels(m)
    assert a.macs() == 16 * 2 * 6 + 16 * 9 * 6 * 3
    assert a.macs(keep_mask(a, {a.groups[0].id: [0, 5]})) == 16 * 2 * 2 + 16 * 9 * 2 * 3
    assert a.group_macs()[a.groups[0].id] == a.macs()


@pytest.mark.parametrize("seed", range(5))
def test_random_plans_on_mixed_graph(seed):
    b = Builder(seed)
    y = stem(b, 8)
    r = b.op("Relu", [b.bn(b.conv(y, 8, 8, group=8), 8)])
    z = b.op("Add", [y, b.conv(r, 8, 8, k=1)])
    c = b.op("Concat", [z, b.conv(z, 8, 4)], axis=1)
    p = b.op("GlobalAveragePool", [c])
    m = b.model([b.gemm(b.op("Flatten", [p]), 12, 3)])
    a = analyze_channels(m)
    keep = random_keep(a, np.random.default_rng(seed), skip=0)
    check_random_plans(m, plans=2, seed=seed)
    assert keep
