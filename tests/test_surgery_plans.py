"""Surgery API: plan validation, slices that a plan would empty, inputs left untouched."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from archs import Builder, check_prune, head, stem

from onnxprune.analysis.groups import analyze_channels
from onnxprune.errors import OnnxPruneError
from onnxprune.surgery import masked_reference, plan_macs, prune_model, validate_keep


def _sliced():
    b = Builder(0)
    y = stem(b, 6)
    s = b.op("Slice", [y, b.const_i64([0]), b.const_i64([2]), b.const_i64([1])])
    m = b.model([b.op("Add", [head(b, s, 2), head(b, y, 6)])])
    return m, analyze_channels(m)


def test_plan_emptying_a_slice_is_refused_by_group():
    m, a = _sliced()
    gid = a.groups[0].id
    with pytest.raises(OnnxPruneError, match=f"group '{gid}' keeps none of the channels 0..1"):
        prune_model(m, {gid: [3, 4]})
    check_prune(m, {gid: [1, 4]}, a)


@pytest.mark.parametrize("keep,match", [
    ({"missing": [0]}, "unknown group id 'missing'"),
    ([1, 2], "must map group ids"),
    ({"G": [0, 0]}, "twice"),
    ({"G": [6]}, "out of range"),
    ({"G": []}, "zero channels"),
    ({"G": [True]}, "integer"),
    ({"G": "01"}, "integer"),
])
def test_validate_keep_errors(keep, match):
    m, a = _sliced()
    if isinstance(keep, dict) and "G" in keep:
        keep = {a.groups[0].id: keep["G"]}
    with pytest.raises(OnnxPruneError, match=match):
        validate_keep(a, keep)
    with pytest.raises(OnnxPruneError, match=match):
        masked_reference(m, keep)


def test_prune_leaves_the_input_model_unchanged():
    m, a = _sliced()
    before = m.SerializeToString()
    keep = {a.groups[0].id: [0, 5]}
    pruned = prune_model(m, keep)
    masked_reference(m, keep)
    assert m.SerializeToString() == before
    assert plan_macs(m, keep) == a.macs(np.isin(np.arange(a.total_channels), [0, 5]) |
                                        (np.arange(a.total_channels) >= 6))
    assert pruned.graph.initializer[0].dims != m.graph.initializer[0].dims


def test_non_prunable_group_listed_in_full_is_accepted():
    m, a = _sliced()
    out = a.groups[-1]
    assert not out.prunable
    check_prune(m, {out.id: list(range(out.channels))}, a)


def test_pruned_model_is_serializable_and_reloads(tmp_path):
    m, a = _sliced()
    pruned = prune_model(m, {a.groups[0].id: [0, 2, 3]})
    onnx.save(pruned, str(tmp_path / "p.onnx"))
    onnx.checker.check_model(str(tmp_path / "p.onnx"), full_check=True)
