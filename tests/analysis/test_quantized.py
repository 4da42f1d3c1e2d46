"""Quantized ops: named barriers with their MACs counted; a quantized model says why."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from archs import Builder
from onnx import TensorProto, helper, numpy_helper

from onnxprune.analysis.groups import analyze_channels
from onnxprune.analysis.summary import count_macs, summarize


def _quantized(op: str) -> onnx.ModelProto:
    """x -> QuantizeLinear -> op (8 filters 3x3 over 4 channels) -> float output."""
    b = Builder(0)
    x = b.input("x", [1, 4, 6, 6])
    scale = b.init(np.array(0.05, np.float32), "s")
    zero = b.init(np.array(0, np.uint8), "z")
    xq = b.op("QuantizeLinear", [x, scale, zero])
    wq = b.init(np.random.default_rng(0).integers(0, 255, (8, 4, 3, 3)).astype(np.uint8), "wq")
    if op == "QLinearConv":
        y = b.op(op, [xq, scale, zero, wq, scale, zero, scale, zero], pads=[1] * 4)
        out = b.op("DequantizeLinear", [y, scale, zero])
    elif op == "ConvInteger":
        out = b.op("Cast", [b.op(op, [xq, wq, zero, zero], pads=[1] * 4)], to=TensorProto.FLOAT)
    else:  # MatMulInteger over the last axis
        w = b.init(np.random.default_rng(1).integers(0, 255, (6, 5)).astype(np.uint8), "wq")
        out = b.op("Cast", [b.op(op, [xq, w, zero, zero])], to=TensorProto.FLOAT)
    return b.model([out], opset=13)


@pytest.mark.parametrize("op,macs", [("QLinearConv", 36 * 9 * 4 * 8),
                                     ("ConvInteger", 36 * 9 * 4 * 8),
                                     ("MatMulInteger", 4 * 6 * 6 * 5)])
def test_quantized_ops_are_counted_and_named_barriers(op, macs):
    model = _quantized(op)
    assert count_macs(model) == macs
    assert summarize(model)["macs_per_node"][0]["op"] == op
    analysis = analyze_channels(model)
    ops = {b["op"] for b in analysis.barriers}
    assert {"QuantizeLinear", op} <= ops
    assert all("prune the float model" in b["reason"] for b in analysis.barriers)
    why = analysis.why_nothing_prunable()
    assert why and why.startswith("the model is quantized") and "QuantizeLinear" in why


def test_why_nothing_prunable_names_run_time_weights():
    b = Builder(1)
    x = b.input("x", [1, 3, 4, 4])
    w = b.op("Mul", [b.weight(4, 3, 1, 1), b.op("ReduceMean", [x], keepdims=0)])
    m = b.model([b.op("Conv", [x, w], kernel_shape=[1, 1])])
    why = analyze_channels(m).why_nothing_prunable()
    assert "computed at run time" in why and "Conv" in why


def test_why_nothing_prunable_lists_the_blocking_reasons():
    b = Builder(2)
    x = b.input("x", [1, 3, 4, 4])
    m = b.model([b.conv(x, 3, 4)])  # the only conv writes a graph output
    a = analyze_channels(m)
    assert "graph output" in a.why_nothing_prunable()


def test_invalid_graph_is_one_line_error_naming_the_node():
    from onnxprune.errors import OnnxPruneError

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    w = numpy_helper.from_array(np.ones((4, 3, 3), np.float32), "w")  # rank 3 for a 2-D conv
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="bad_conv")
    graph = helper.make_graph([node], "g", [x], [helper.make_tensor_value_info(
        "y", TensorProto.FLOAT, None)], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(OnnxPruneError, match=r"^invalid graph: Conv node 'bad_conv': .*spatial"):
        analyze_channels(model)
