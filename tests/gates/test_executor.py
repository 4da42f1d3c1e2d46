"""TorchGraph against onnxruntime: one tiny graph per op family, exported CNNs, hooks, capture."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper as h
from onnx import numpy_helper
from torch import nn

from onnxprune.errors import OnnxPruneError
from onnxprune.gates.executor import TorchGraph
from onnxprune.gates.torch_ops import OPS

RNG = np.random.default_rng(0)
MODELS = Path(__file__).resolve().parents[2] / "models"


def rand(*shape, low=-2.0, high=2.0):
    return RNG.uniform(low, high, shape).astype(np.float32)


def make(nodes, feeds, inits=None, outputs=None, opset=17):
    """A model from nodes; ``feeds`` are the graph inputs (name → array), ``inits`` the weights."""
    feeds = {k: np.asarray(v) for k, v in feeds.items()}
    inputs = [
        h.make_tensor_value_info(k, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for k, v in feeds.items()
    ]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]
    outputs = outputs or [nodes[-1].output[0]]
    graph = h.make_graph(nodes, "g", inputs, [h.make_empty_tensor_value_info(o) for o in outputs], inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)], ir_version=9), feeds


def run_ort(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def assert_matches(model, feeds, graph=None):
    graph = graph or TorchGraph(model)
    refs = run_ort(model, feeds)
    outs = graph(*[torch.from_numpy(v) for v in feeds.values()])
    outs = outs if isinstance(outs, tuple) else (outs,)
    assert len(outs) == len(refs)
    for out, ref in zip(outs, refs):
        out = out.detach().numpy()
        assert out.shape == ref.shape
        if np.issubdtype(ref.dtype, np.floating):
            scale = max(1.0, float(np.abs(ref).max()))
            assert np.abs(out - ref).max() <= 1e-5 * scale
        else:
            assert out.dtype == ref.dtype and np.array_equal(out, ref)


def node(op, inputs, outputs=("y",), **attrs):
    return h.make_node(op, list(inputs), list(outputs), **attrs)


def one(op, feeds, inits=None, opset=17, n_out=1, **attrs):
    names = [*feeds, *(inits or {})]
    outs = [f"y{i}" for i in range(n_out)] if n_out > 1 else ["y"]
    return make([node(op, names, outs, **attrs)], feeds, inits, outs, opset)


def unary(op, low=-2.0, **attrs):
    return lambda: one(op, {"x": rand(2, 3, 4, low=low)}, **attrs)


X4 = (2, 4, 7, 7)
CASES = {
    **{op: unary(op) for op in ("Relu", "Sigmoid", "Tanh", "Erf", "Neg", "Exp", "Abs", "Softplus",
                                "HardSwish", "Floor", "Ceil", "Sign", "Identity")},
    **{op: unary(op, low=0.1) for op in ("Sqrt", "Log", "Reciprocal")},
    "LeakyRelu": unary("LeakyRelu", alpha=0.2),
    "Elu": unary("Elu", alpha=0.5),
    "Selu": unary("Selu"),
    "HardSigmoid": unary("HardSigmoid", alpha=0.3, beta=0.4),
    "HardSigmoid-torch": unary("HardSigmoid", alpha=1 / 6),
    "Gelu": lambda: one("Gelu", {"x": rand(2, 5)}, opset=20),
    "Gelu-tanh": lambda: one("Gelu", {"x": rand(2, 5)}, opset=20, approximate="tanh"),
    "PRelu": lambda: one("PRelu", {"x": rand(*X4)}, {"s": rand(4, 1, 1)}),
    "Clip-attr": lambda: one("Clip", {"x": rand(3, 4)}, opset=6, min=-0.5, max=0.7),
    "Clip-relu6": lambda: one("Clip", {"x": rand(3, 4) * 5}, {"lo": np.float32(0), "hi": np.float32(6)}),
    "Clip-min": lambda: one("Clip", {"x": rand(3, 4)}, {"lo": np.float32(0.1)}),
    "Clip-runtime": lambda: one("Clip", {"x": rand(3, 4), "lo": np.float32(-0.3)}),
    "Softmax-11": lambda: one("Softmax", {"x": rand(2, 3, 4)}, opset=11, axis=1),
    "Softmax": lambda: one("Softmax", {"x": rand(2, 3, 4)}),
    "LogSoftmax": lambda: one("LogSoftmax", {"x": rand(2, 3, 4)}, axis=1),
    **{op: (lambda op=op: one(op, {"a": rand(2, 3, 4), "b": rand(3, 1)}))
       for op in ("Add", "Sub", "Mul", "Div", "Equal", "Less", "Greater", "LessOrEqual",
                  "GreaterOrEqual")},
    **{op: (lambda op=op: one(op, {"a": rand(2, 3) > 0, "b": rand(3) > 0})) for op in ("And", "Or")},
    "Not": lambda: one("Not", {"a": rand(2, 3) > 0}),
    "Equal-int": lambda: one("Equal", {"a": np.arange(6).reshape(2, 3)}, {"b": np.array([0, 4, 2])}),
    "Div-int": lambda: one("Div", {"a": np.arange(7, 13).reshape(2, 3)}, {"b": np.array([2, 3, 5])}),
    "Pow": lambda: one("Pow", {"a": rand(2, 3, low=0.1)}, {"b": np.float32(2.5)}),
    "Where": lambda: one("Where", {"c": rand(2, 3) > 0, "a": rand(2, 3), "b": rand(3)}),
    **{op: (lambda op=op: one(op, {"a": rand(2, 3), "b": rand(3), "c": rand(1, 3)}))
       for op in ("Min", "Max", "Sum", "Mean")},
    "Gemm": lambda: one("Gemm", {"a": rand(3, 5)}, {"w": rand(4, 5), "c": rand(4)}, transB=1),
    "Gemm-alpha": lambda: one("Gemm", {"a": rand(5, 3)}, {"w": rand(5, 4), "c": rand(3, 4)},
                              alpha=0.5, beta=2.0, transA=1),
    "Gemm-noC": lambda: one("Gemm", {"a": rand(3, 5)}, {"w": rand(5, 4)}, alpha=2.0),
    "MatMul": lambda: one("MatMul", {"a": rand(2, 3, 5)}, {"b": rand(5, 4)}),
    "Einsum": lambda: one("Einsum", {"a": rand(2, 3, 5), "b": rand(2, 5, 4)}, equation="bij,bjk->bik"),
    "Conv": lambda: one("Conv", {"x": rand(*X4)}, {"w": rand(6, 4, 3, 3), "b": rand(6)},
                        pads=[1, 1, 1, 1], strides=[2, 2]),
    "Conv-depthwise": lambda: one("Conv", {"x": rand(*X4)}, {"w": rand(4, 1, 3, 3)}, group=4,
                                  pads=[1, 1, 1, 1], dilations=[2, 2]),
    "Conv-asym": lambda: one("Conv", {"x": rand(*X4)}, {"w": rand(3, 4, 3, 2)}, pads=[0, 1, 2, 0]),
    "Conv-same": lambda: one("Conv", {"x": rand(*X4)}, {"w": rand(3, 4, 3, 3)}, auto_pad="SAME_UPPER",
                             strides=[2, 2]),
    "Conv-valid": lambda: one("Conv", {"x": rand(*X4)}, {"w": rand(3, 4, 3, 3)}, auto_pad="VALID"),
    "Conv-1d": lambda: one("Conv", {"x": rand(2, 4, 9)}, {"w": rand(6, 2, 3), "b": rand(6)}, group=2,
                           pads=[1, 1]),
    "ConvTranspose": lambda: one("ConvTranspose", {"x": rand(*X4)}, {"w": rand(4, 3, 3, 3), "b": rand(3)},
                                 strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]),
    "ConvTranspose-asym": lambda: one("ConvTranspose", {"x": rand(*X4)}, {"w": rand(4, 2, 3, 3)},
                                      strides=[2, 2], pads=[0, 1, 1, 0], group=2),
    "BatchNormalization": lambda: one(
        "BatchNormalization", {"x": rand(*X4)},
        {"g": rand(4), "b": rand(4), "m": rand(4), "v": rand(4, low=0.5)}, opset=15, epsilon=1e-3),
    "LayerNormalization": lambda: one("LayerNormalization", {"x": rand(2, 3, 8)},
                                      {"g": rand(8), "b": rand(8)}),
    "LayerNormalization-axis": lambda: one("LayerNormalization", {"x": rand(2, 3, 8)},
                                           {"g": rand(1, 8)}, axis=1),
    "MaxPool": lambda: one("MaxPool", {"x": rand(*X4)}, kernel_shape=[3, 3], strides=[2, 2],
                           pads=[1, 1, 1, 1], ceil_mode=1),
    "MaxPool-dil": lambda: one("MaxPool", {"x": rand(*X4)}, kernel_shape=[2, 2], dilations=[2, 2]),
    "MaxPool-asym": lambda: one("MaxPool", {"x": rand(*X4)}, kernel_shape=[2, 2], strides=[2, 2],
                                pads=[0, 0, 1, 1]),
    "MaxPool-1d": lambda: one("MaxPool", {"x": rand(2, 3, 9)}, kernel_shape=[3], strides=[2]),
    "AveragePool": lambda: one("AveragePool", {"x": rand(*X4)}, kernel_shape=[3, 3], strides=[2, 2],
                               pads=[1, 1, 1, 1]),
    "AveragePool-incl": lambda: one("AveragePool", {"x": rand(*X4)}, kernel_shape=[3, 3],
                                    strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1),
    "AveragePool-ceil": lambda: one("AveragePool", {"x": rand(*X4)}, kernel_shape=[2, 2],
                                    strides=[2, 2], ceil_mode=1),
    "GlobalAveragePool": lambda: one("GlobalAveragePool", {"x": rand(*X4)}),
    "GlobalMaxPool": lambda: one("GlobalMaxPool", {"x": rand(2, 3, 5)}),
    "Flatten": lambda: one("Flatten", {"x": rand(*X4)}),
    "Flatten-2": lambda: one("Flatten", {"x": rand(*X4)}, axis=2),
    "Flatten-0": lambda: one("Flatten", {"x": rand(2, 3)}, axis=0),
    "Reshape": lambda: one("Reshape", {"x": rand(*X4)}, {"s": np.array([0, -1, 7])}),
    "Reshape-allowzero": lambda: one("Reshape", {"x": rand(2, 3)}, {"s": np.array([3, 2])},
                                     opset=14, allowzero=1),
    "Reshape-runtime": lambda: one("Reshape", {"x": rand(2, 6), "s": np.array([3, -1])}),
    "Concat": lambda: one("Concat", {"a": rand(2, 3), "b": rand(2, 1)}, axis=-1),
    "Split-attr": lambda: one("Split", {"x": rand(2, 6)}, opset=11, n_out=2, axis=1, split=[2, 4]),
    "Split-input": lambda: one("Split", {"x": rand(2, 6)}, {"s": np.array([1, 5])}, n_out=2, axis=1),
    "Split-equal": lambda: one("Split", {"x": rand(6, 2)}, n_out=3),
    "Split-num": lambda: one("Split", {"x": rand(2, 7)}, opset=18, n_out=3, axis=1, num_outputs=3),
    "Slice-9": lambda: one("Slice", {"x": rand(4, 6)}, opset=9, starts=[1, -4], ends=[100, -1],
                           axes=[0, 1]),
    "Slice": lambda: one("Slice", {"x": rand(4, 6)}, {"s": np.array([1, 5]), "e": np.array([3, -100]),
                                                      "a": np.array([0, -1]), "t": np.array([1, -2])}),
    "Slice-runtime": lambda: one("Slice", {"x": rand(4, 6), "s": np.array([1]), "e": np.array([3])}),
    "Transpose": lambda: one("Transpose", {"x": rand(2, 3, 4)}, perm=[1, 2, 0]),
    "Transpose-default": lambda: one("Transpose", {"x": rand(2, 3, 4)}),
    "Squeeze-11": lambda: one("Squeeze", {"x": rand(2, 1, 3, 1)}, opset=11, axes=[1, -1]),
    "Squeeze": lambda: one("Squeeze", {"x": rand(2, 1, 3, 1)}, {"a": np.array([3])}),
    "Squeeze-all": lambda: one("Squeeze", {"x": rand(2, 1, 3, 1)}),
    "Unsqueeze-11": lambda: one("Unsqueeze", {"x": rand(2, 3)}, opset=11, axes=[0, -1]),
    "Unsqueeze": lambda: one("Unsqueeze", {"x": rand(2, 3)}, {"a": np.array([1, 3])}),
    "Shape": lambda: one("Shape", {"x": rand(2, 3, 4)}, opset=15, start=1),
    "Gather": lambda: one("Gather", {"x": rand(5, 4)}, {"i": np.array([[0, -1], [2, 2]])}, axis=1),
    "Gather-scalar": lambda: one("Gather", {"x": rand(5, 4)}, {"i": np.array(-2)}),
    "Constant": lambda: make([node("Constant", [], ["c"], value=numpy_helper.from_array(rand(3))),
                              node("Add", ["x", "c"])], {"x": rand(2, 3)}),
    "Constant-ints": lambda: make([node("Constant", [], ["c"], value_ints=[2, 3]),
                                   node("Reshape", ["x", "c"])], {"x": rand(6)}),
    "ConstantOfShape": lambda: make([node("Shape", ["x"], ["s"]),
                                     node("ConstantOfShape", ["s"], value=numpy_helper.from_array(
                                         np.array([1.5], np.float32)))], {"x": rand(2, 3)}),
    "Cast": lambda: one("Cast", {"x": rand(2, 3) * 3}, to=onnx.TensorProto.INT64),
    "CastLike": lambda: one("CastLike", {"x": np.arange(4)}, {"t": np.float32(0)}),
    "Dropout": lambda: one("Dropout", {"x": rand(2, 3)}, opset=13),
    "Resize-nearest": lambda: one("Resize", {"x": rand(*X4)}, {"r": np.zeros(0, np.float32),
                                  "s": np.array([1, 1, 2, 2], np.float32)}, mode="nearest",
                                  coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    "Resize-nearest-sizes": lambda: one("Resize", {"x": rand(*X4)}, {"r": np.zeros(0, np.float32),
                                        "e": np.zeros(0, np.float32), "z": np.array([2, 4, 10, 5])}),
    "Resize-linear": lambda: one("Resize", {"x": rand(*X4)}, {"r": np.zeros(0, np.float32),
                                 "s": np.array([1, 1, 2, 1.5], np.float32)}, mode="linear",
                                 coordinate_transformation_mode="pytorch_half_pixel"),
    "Resize-align": lambda: one("Resize", {"x": rand(*X4)}, {"r": np.zeros(0, np.float32),
                                "e": np.zeros(0, np.float32), "z": np.array([2, 4, 12, 9])},
                                mode="linear", coordinate_transformation_mode="align_corners"),
    "Resize-10": lambda: one("Resize", {"x": rand(*X4)}, {"s": np.array([1, 1, 2, 2], np.float32)},
                             opset=10),
    "Upsample": lambda: one("Upsample", {"x": rand(*X4)}, {"s": np.array([1, 1, 2, 3], np.float32)},
                            opset=9),
    "Pad": lambda: one("Pad", {"x": rand(*X4)}, {"p": np.array([0, 0, 1, 2, 0, 0, 2, 0]),
                                                 "v": np.float32(0.5)}),
    "Pad-reflect": lambda: one("Pad", {"x": rand(*X4)}, {"p": np.array([0, 0, 1, 2, 0, 0, 2, 1])},
                               mode="reflect"),
    "Pad-edge": lambda: one("Pad", {"x": rand(*X4)}, {"p": np.array([0, 0, 1, 2, 0, 0, 2, 1])},
                            mode="edge"),
    "Pad-2": lambda: one("Pad", {"x": rand(2, 3)}, opset=2, pads=[1, 0, 0, 2], value=-1.0),
    "ReduceMean": lambda: one("ReduceMean", {"x": rand(*X4)}, axes=[2, 3], keepdims=0),
    "ReduceMean-all": lambda: one("ReduceMean", {"x": rand(*X4)}),
    "ReduceMean-18": lambda: one("ReduceMean", {"x": rand(*X4)}, {"a": np.array([-1])}, opset=18),
    "ReduceSum": lambda: one("ReduceSum", {"x": rand(*X4)}, {"a": np.array([1])}, opset=13),
    "ReduceMax": lambda: one("ReduceMax", {"x": rand(*X4)}, opset=13, axes=[1], keepdims=0),
    "ReduceMin": lambda: one("ReduceMin", {"x": rand(*X4)}, {"a": np.array([0, 2])}, opset=18),
    "Expand": lambda: one("Expand", {"x": rand(3, 1)}, {"s": np.array([2, 1, 4])}),
    "Range": lambda: one("Range", {"a": np.array(1, np.int64), "b": np.array(9, np.int64)},
                         {"d": np.array(3, np.int64)}),
    "Tile": lambda: one("Tile", {"x": rand(2, 3)}, {"r": np.array([2, 3])}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_matches_onnxruntime(case):
    assert_matches(*CASES[case]())


def test_every_table_op_has_a_case():
    from test_executor_more_ops import MORE_CASES, RANDOM_CASES  # the torch_ops_more kernels

    builds = [*CASES.values(), *MORE_CASES.values(), *(c[0] for c in RANDOM_CASES.values())]
    covered = {n.op_type for build in builds for n in build()[0].graph.node}
    assert set(OPS) - covered == set()


# ---- exported torch models --------------------------------------------------------------------

class SmallCNN(nn.Module):
    """Residual add, depthwise conv, SE block, concat and a Flatten → Linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 8, 1)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 4, 1), nn.ReLU(),
                                nn.Conv2d(4, 8, 1), nn.Sigmoid())
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        y = self.stem(x)
        z = self.pw(nn.functional.relu6(self.dw(y))) + y
        z = z * self.se(z)
        z = self.pool(torch.cat([z, y], 1))
        return self.fc(torch.flatten(z, 1))


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    model = SmallCNN().eval()
    model.stem[1].running_mean.uniform_(-1, 1)
    model.stem[1].running_var.uniform_(0.5, 2)
    return model


def export(model, dynamo: bool) -> onnx.ModelProto:
    x = torch.randn(2, 3, 8, 8)
    if dynamo:
        batch = torch.export.Dim("batch")
        program = torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes={"x": {0: batch}})
        return program.model_proto
    buffer = io.BytesIO()
    torch.onnx.export(model, (x,), buffer, dynamo=False, opset_version=17, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}})
    return onnx.load_from_string(buffer.getvalue())


@pytest.fixture(scope="module", params=[False, True], ids=["torchscript", "dynamo"])
def exported(request, cnn):
    return export(cnn, request.param)


def test_exported_cnn_matches_ort_and_torch_at_batch_1_and_5(exported, cnn):
    graph = TorchGraph(exported)
    for batch in (1, 5):
        x = rand(batch, 3, 8, 8)
        assert_matches(exported, {exported.graph.input[0].name: x}, graph)
        with torch.no_grad():
            expected = cnn(torch.from_numpy(x))
        assert torch.allclose(graph(torch.from_numpy(x)), expected, atol=1e-5)


def conv_nodes(model):
    return [n.name for n in model.graph.node if n.op_type == "Conv"]


def test_read_hook_gradients_reach_gates_not_weights(exported):
    graph = TorchGraph(exported)
    name = conv_nodes(exported)[1]
    alpha = torch.zeros(8, requires_grad=True)
    graph.set_read_hooks({(name, 0): lambda t: t * torch.sigmoid(alpha).view(1, -1, 1, 1)})
    loss = graph(torch.randn(3, 3, 8, 8)).square().sum()
    loss.backward()
    assert alpha.grad is not None and alpha.grad.abs().sum() > 0
    assert all(not b.requires_grad and b.grad is None for b in graph.buffers())
    assert list(graph.parameters()) == []


def test_read_hook_changes_output_and_can_be_removed(exported):
    x = torch.randn(2, 3, 8, 8)
    name = conv_nodes(exported)[0]
    graph = TorchGraph(exported, read_hooks={(name, 0): lambda t: t * 0})
    zeroed = graph(x)
    graph.set_read_hooks({})
    plain = graph(x)
    assert not torch.allclose(zeroed, plain)
    reference = run_ort(exported, {exported.graph.input[0].name: x.numpy()})[0]
    assert np.allclose(plain.detach().numpy(), reference, atol=1e-5)


def test_read_hook_on_a_weight_input(exported):
    name = conv_nodes(exported)[0]
    graph = TorchGraph(exported, read_hooks={(name, 1): lambda w: w * 2})
    plain = TorchGraph(exported)
    x = torch.randn(2, 3, 8, 8)
    assert not torch.allclose(graph(x), plain(x))


def test_bad_hook_keys_are_refused(exported):
    with pytest.raises(OnnxPruneError, match="unknown node"):
        TorchGraph(exported, read_hooks={("nope", 0): lambda t: t})
    with pytest.raises(OnnxPruneError, match="no input 7"):
        TorchGraph(exported, read_hooks={(conv_nodes(exported)[0], 7): lambda t: t})


def test_capture_returns_intermediates(exported):
    graph = TorchGraph(exported)
    convs = [n for n in exported.graph.node if n.op_type == "Conv"]
    wanted = {convs[0].output[0], convs[2].output[0], exported.graph.input[0].name}
    x = torch.randn(2, 3, 8, 8)
    out, got = graph.forward_with(x, wanted)
    assert set(got) == wanted
    assert torch.equal(got[exported.graph.input[0].name], x)
    assert got[convs[0].output[0]].shape == (2, 8, 8, 8)
    assert torch.allclose(out, graph(x))
    with pytest.raises(OnnxPruneError, match="unknown tensor"):
        graph.forward_with(x, {"missing"})


def test_shape_arithmetic_is_folded_but_batch_stays_dynamic():
    nodes = [node("Shape", ["x"], ["s"]),
             node("Gather", ["s", "zero"], ["n"], axis=0),
             node("Unsqueeze", ["n", "ax"], ["n1"]),
             node("Concat", ["n1", "minus"], ["target"], axis=0),
             node("Reshape", ["x", "target"])]
    inits = {"zero": np.array(0), "ax": np.array([0]), "minus": np.array([-1])}
    model, _ = make(nodes, {"x": rand(2, 3, 4)}, inits)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    graph = TorchGraph(model)
    steps = graph._plan(frozenset(graph.output_names)).steps
    assert len(steps) == 1  # only the Reshape runs
    for batch in (1, 5):
        assert_matches(model, {"x": rand(batch, 3, 4)}, graph)


def test_unknown_op_is_a_one_line_error():
    model, _ = make([node("Relu", ["x"], ["r"]), node("NoSuchOp", ["r"])], {"x": rand(2)})
    with pytest.raises(OnnxPruneError, match="NoSuchOp") as info:
        TorchGraph(model)
    assert "\n" not in str(info.value) and "NoSuchOp_1" in str(info.value)


def test_unnamed_nodes_are_named_on_a_copy():
    model, feeds = make([node("Relu", ["x"], ["r"]), node("Neg", ["r"])], {"x": rand(3)})
    graph = TorchGraph(model, read_hooks={("Neg_1", 0): lambda t: t + 1})
    assert [n.name for n in model.graph.node] == ["", ""]
    expected = -(np.maximum(feeds["x"], 0) + 1)
    assert np.allclose(graph(torch.from_numpy(feeds["x"])).numpy(), expected)


def test_weights_are_buffers_that_follow_to():
    model, feeds = CASES["Conv"]()
    graph = TorchGraph(model).to(torch.float64)
    assert all(b.dtype == torch.float64 for b in graph.buffers() if b.is_floating_point())
    out = graph(torch.from_numpy(feeds["x"]).double())
    assert out.dtype == torch.float64
    assert np.allclose(out.numpy(), run_ort(model, feeds)[0], atol=1e-4)


REFERENCE = ["vgg", "resnet", "mobilenetv2", "vgg_dynamo", "resnet_dynamo", "mobilenetv2_dynamo"]


@pytest.mark.parametrize("name", REFERENCE)
def test_reference_models_match_ort(name):
    path, data = MODELS / f"{name}.onnx", MODELS / "mnist_test.npz"
    if not path.exists() or not data.exists():
        pytest.skip(f"{path.name} or mnist_test.npz not generated")
    from onnxprune.graph import load_model

    model = load_model(path).model
    x = np.load(data)["x"][:32]
    assert_matches(model, {model.graph.input[0].name: x})
