"""The one shape folder (``analysis.shapefold``): used by the analysis (all dims known) and by
the torch executor (batch symbolic)."""

from __future__ import annotations

import numpy as np
import pytest
from archs import Builder

from onnxprune.analysis import shapefold
from onnxprune.analysis.shapes import fold_shape_values, infer_shapes


def _flatten_by_shape():
    """Reshape(x, Concat(Gather(Shape(x), 0), -1)): a target only a shape folder makes const."""
    b = Builder(0)
    x = b.input("x", ["N", 3, 4, 4])
    y = b.conv(x, 3, 4)
    n = b.op("Gather", [b.op("Shape", [y]), b.const_i64([0])], axis=0)
    flat = b.op("Reshape", [y, b.op("Concat", [n, b.const_i64([-1])], axis=0)])
    return b.model([b.gemm(flat, 64, 2)])


def test_reshape_target():
    assert shapefold.reshape_target((("N", 64), False), ["N", 4, 4, 4]) == [0, 64]
    assert shapefold.reshape_target((("N", None), False), ["N", 4, 4, 4]) == [0, -1]
    assert shapefold.reshape_target(((None, None), False), ["N", 4]) is None
    assert shapefold.reshape_target(((2,), True), ["N"]) is None


def test_analysis_and_executor_use_the_same_folder(monkeypatch):
    torch = pytest.importorskip("torch")
    from onnxprune.gates.executor import TorchGraph

    seen = []
    real = shapefold.SYMBOLIC["Gather"]

    def spy(spec, ins, dims):
        value = real(spec, ins, dims)
        seen.append(value)
        return value

    monkeypatch.setitem(shapefold.SYMBOLIC, "Gather", spy)
    model = _flatten_by_shape()
    folded = fold_shape_values(model, infer_shapes(model))
    assert seen == [((1,), False)] and any(np.array_equal(v, [1, -1]) for v in folded.values())
    graph = TorchGraph(model)
    assert seen[-1] == (("N",), False)  # the executor keeps the batch symbolic
    # the shape arithmetic is folded at construction, not run per batch: conv, reshape, gemm
    assert len(graph._plan(frozenset(graph.output_names)).steps) == 3
    out = graph(torch.randn(5, 3, 4, 4))
    assert out.shape == (5, 2)
