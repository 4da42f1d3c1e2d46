"""Issue 12: the representative graphs as PyTorch writes them (both exporters, dynamic H/W):
at least 90% of MACs prunable, random plans pruned equal to their masked reference at two input
sizes (checker with full_check, declared dynamic dims kept: ``check_dynamic_plans``)."""

from __future__ import annotations

import pytest
import realworld_archs as rw
import realworld_torch as rt

pytest.importorskip("torch")

CASES = rt.cases()


@pytest.mark.parametrize("case", CASES, ids=[rt.case_id(c) for c in CASES])
def test_exported_graph(case):
    model, input_shapes, run_shapes = rt.export(*case)
    (name, _), = input_shapes.items()
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim if d.dim_param]
    assert len(dims) >= 2, f"{rt.case_id(case)}: the export is not dynamic ({dims})"
    analysis = rw.check_dynamic_plans(model, input_shapes, run_shapes, plans=2)
    share = rw.prunable_share(analysis)
    assert share >= 0.9, f"{rt.case_id(case)}: {share:.1%} prunable; {analysis.barriers}"


def test_torchscript_chunk_slices_with_computed_bounds_are_pruned():
    """``chunk`` at opset 17 is Slice with bounds from Shape -> Gather -> Add -> Div -> Mul; one
    C2f's bounds are computable only once the previous C2f's have been folded."""
    import numpy as np
    from archs import random_keep

    from onnxprune.analysis.groups import analyze_channels
    from onnxprune.surgery import prune_model

    model, input_shapes, _ = rt.export("yolov8", False)
    slices = [n for n in model.graph.node if n.op_type == "Slice"]
    assert len(slices) >= 14 and all(n.input[2] not in {t.name for t in model.graph.initializer}
                                      for n in slices)
    analysis = analyze_channels(model, input_shapes=input_shapes)
    assert not [b for b in analysis.barriers if b["op"] == "Slice"]
    pruned = prune_model(model, random_keep(analysis, np.random.default_rng(3), skip=0.0),
                         input_shapes=input_shapes)
    assert sum(n.op_type == "Slice" for n in pruned.graph.node) == len(slices)


def test_opset9_export_has_computed_weights():
    model, input_shapes, _ = rt.export("opset9", False)
    assert model.opset_import[0].version == 9
    from onnxprune.analysis.groups import analyze_channels

    analysis = analyze_channels(model, input_shapes=input_shapes)
    assert len(analysis.folded) >= 2  # the fp16 round trip and the scaled weight
