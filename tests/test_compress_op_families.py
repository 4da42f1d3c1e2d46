"""``compress`` (l1 and autobot) on one tiny model per op family that has channel rules.

Each model is Conv → the family's ops → … → Conv → GlobalAveragePool → Flatten → Gemm, with the
family's ops on a prunable channel path, so gate training, selection, surgery, recalibration and
validation all run through them. Ops whose rule is a barrier (LRN, SpaceToDepth, TopK, …) sit on
a second channel path, so their kernels run too while the first path is pruned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from archs import Builder
from onnx import numpy_helper

import onnxprune
from onnxprune.analysis.groups import analyze_channels
from onnxprune.pipeline import CompressConfig

FAMILIES = ("conv", "elementwise", "gemm", "normalization", "pooling", "reshape", "resize_pad",
            "concat_split", "shape_ops")
OPS_DIR = Path(onnxprune.__file__).parent / "ops"


def _start(b: Builder, c: int = 8, relu: bool = True) -> str:
    x = b.input("x", ["N", 3, 8, 8])
    y = b.conv(x, 3, c)
    return b.op("Relu", [y]) if relu else y


def _finish(b: Builder, y: str, c: int) -> str:
    y = b.op("Relu", [b.conv(y, c, 8)])
    return b.gemm(b.op("Flatten", [b.op("GlobalAveragePool", [y])]), 8, 10)


def _per_channel(b: Builder, c: int, low=0.5, high=1.5) -> str:
    return b.init(b.rng.uniform(low, high, (1, c, 1, 1)).astype(np.float32))


def _scalar(b: Builder, value: float) -> str:
    return b.init(np.array(value, np.float32))


def conv(b: Builder) -> str:
    y = b.op("Relu", [b.conv(_start(b), 8, 8, group=8)])  # depthwise
    w, bias = b.weight(8, 6, 3, 3), b.init(np.zeros(6, np.float32))
    y = b.op("ConvTranspose", [y, w, bias], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    y = b.op("Relu", [b.conv(b.op("Relu", [y]), 6, 12, k=1, group=2)])  # grouped
    return _finish(b, b.conv(y, 12, 24, group=12), 24)  # depthwise with a multiplier


def elementwise(b: Builder) -> str:
    y = _start(b)
    y = b.op("Mul", [y, b.op("Sigmoid", [y])])
    for op, attrs in (("Celu", {"alpha": 0.8}), ("Softsign", {}), ("Mish", {}), ("Sin", {}),
                      ("Shrink", {"lambd": 0.1}), ("ThresholdedRelu", {"alpha": -0.5}),
                      ("LeakyRelu", {"alpha": 0.1}), ("HardSwish", {}), ("Erf", {})):
        y = b.op(op, [y], **attrs)
    y = b.op("Add", [y, b.op("Cos", [y])])
    y = b.op("PRelu", [y, _per_channel(b, 8, 0.0, 0.3)])
    y = b.op("Div", [b.op("Mul", [y, _per_channel(b, 8)]), _per_channel(b, 8)])
    r = b.op("Add", [b.op("Relu", [b.conv(y, 8, 8)]), y])  # residual: couples two convs
    r = b.op("Where", [b.op("Greater", [r, _scalar(b, 0.0)]), r, b.op("Neg", [r])])
    r = b.op("Mod", [b.op("Round", [b.op("Mul", [r, _scalar(b, 4.0)])]), _scalar(b, 7.0)],
             fmod=1)
    r = b.op("Clip", [b.op("Max", [r, b.op("Abs", [y])]), _scalar(b, 0.0), _scalar(b, 6.0)])
    return _finish(b, r, 8)


def gemm(b: Builder) -> str:
    y = b.op("Transpose", [_start(b)], perm=[0, 2, 3, 1])
    y = b.op("Add", [b.op("MatMul", [y, b.weight(8, 8)]), b.init(np.zeros(8, np.float32))])
    y = b.op("Relu", [b.op("Transpose", [y], perm=[0, 3, 1, 2])])
    y = b.op("Flatten", [b.op("GlobalAveragePool", [b.conv(y, 8, 8)])])
    y = b.op("Relu", [b.gemm(y, 8, 16)])
    y = b.op("Relu", [b.gemm(y, 16, 12, trans_b=0)])
    return b.gemm(y, 12, 10)


def normalization(b: Builder) -> str:
    y = b.op("Relu", [b.bn(_start(b, relu=False), 8)])
    y = b.op("InstanceNormalization", [y, b.init(np.ones(8, np.float32)),
                                       b.init(np.full(8, 0.1, np.float32))])
    y = b.op("LayerNormalization", [y, b.init(np.ones(8, np.float32))], axis=-1)
    z = b.op("LRN", [b.conv(y, 8, 8)], size=3)  # the rest of this path are barriers
    z = b.op("LpNormalization", [z], axis=1)
    return _finish(b, b.op("Relu", [z]), 8)


def _mixing_norm(op: str) -> onnx.ModelProto:
    """Conv → GroupNormalization or MeanVarianceNormalization → Relu → Conv, opset 18."""
    b = Builder(0)
    y = _start(b)
    params = [b.init(np.ones(2, np.float32)), b.init(np.zeros(2, np.float32))]
    attrs = {"num_groups": 2} if op == "GroupNormalization" else {}
    y = b.op(op, [y, *params] if attrs else [y], **attrs)
    out = _finish(b, b.op("Relu", [y]), 8)
    graph = onnx.helper.make_graph(b.nodes, "g", b.inputs, [onnx.helper.make_tensor_value_info(
        out, onnx.TensorProto.FLOAT, None)], b.inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model


def _axes(b: Builder, *axes) -> str:
    return b.const_i64(list(axes))


def pooling(b: Builder) -> str:
    y = b.op("MaxPool", [_start(b)], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    y = b.op("AveragePool", [y], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    y = b.op("LpPool", [y], kernel_shape=[3, 3], pads=[1, 1, 1, 1], p=2)
    y = b.op("Softmax", [y], axis=3)
    z = b.op("SpaceToDepth", [b.conv(y, 8, 8)], blocksize=2)  # barriers from here on
    z = b.op("DepthToSpace", [z], blocksize=2, mode="CRD")
    z = b.op("Hardmax", [b.op("TopK", [z, b.const_i64([8])], outputs=2, axis=3)[0]], axis=2)
    z = b.op("CumSum", [z, b.const_i64(3)])
    z = b.op("Relu", [b.conv(z, 8, 12)])
    pooled = [b.op("ReduceMean", [z, _axes(b, 2, 3)]), b.op("GlobalLpPool", [z]),
              b.op("ReduceL2", [z, _axes(b, -2, -1)]), b.op("ReduceLogSumExp", [z, _axes(b, 2, 3)]),
              b.op("ReduceMax", [z, _axes(b, 2, 3)]),
              b.op("ReduceMean", [b.op("ReduceProd", [b.op("Sigmoid", [z]), _axes(b, 3)]),
                                  _axes(b, 2)])]
    head = b.op("Flatten", [b.op("Sum", pooled)])
    return b.gemm(head, 12, 10)


def reshape(b: Builder) -> str:
    y = b.op("Reshape", [_start(b), b.const_i64([0, 8, 64])])
    y = b.op("Squeeze", [b.op("Unsqueeze", [y, _axes(b, 3)]), _axes(b, 3)])
    y = b.op("Reshape", [y, b.const_i64([0, 8, 8, 8])])
    y = b.op("Transpose", [b.op("Transpose", [y], perm=[0, 2, 3, 1])], perm=[0, 3, 1, 2])
    y = b.op("Relu", [b.conv(y, 8, 8)])
    se = b.op("Expand", [b.op("GlobalAveragePool", [y]), b.const_i64([1, 1, 8, 8])])
    y = b.op("Tile", [b.op("Mul", [y, b.op("Sigmoid", [se])]), b.const_i64([1, 1, 2, 2])])
    return _finish(b, b.op("Relu", [b.conv(y, 8, 8, stride=2)]), 8)


def resize_pad(b: Builder) -> str:
    scales = b.init(np.array([1, 1, 2, 2], np.float32))
    y = b.op("Resize", [_start(b), "", scales], mode="nearest")
    y = b.op("Relu", [b.conv(y, 8, 8, stride=2)])
    y = b.op("Pad", [y, b.const_i64([0, 0, 1, 0, 0, 0, 0, 1])])
    y = b.op("Pad", [y, b.const_i64([0, 0, 0, 1, 0, 0, 1, 0])], mode="reflect")
    y = b.op("Resize", [y, "", b.init(np.array([1, 1, 0.5, 0.5], np.float32))], mode="linear")
    return _finish(b, y, 8)


def concat_split(b: Builder) -> str:
    x = b.input("x", ["N", 3, 8, 8])
    a, c = (b.op("Relu", [b.conv(x, 3, 8)]) for _ in range(2))
    y = b.op("Concat", [a, c], axis=1)
    y = b.op("Slice", [y, b.const_i64([2]), b.const_i64([14]), b.const_i64([1])])
    s0, s1 = b.op("Split", [y, b.const_i64([4, 8])], outputs=2, axis=1)
    y = b.op("Add", [b.conv(s0, 4, 8), b.conv(s1, 8, 8)])
    return _finish(b, b.op("Relu", [y]), 8)


def shape_ops(b: Builder) -> str:
    y = _start(b)
    y = b.op("Reshape", [b.op("Sigmoid", [y]), b.op("Shape", [y])])
    width = b.op("Gather", [b.op("Shape", [y]), b.const_i64([3])], axis=0)
    ramp = b.op("Cast", [b.op("Range", [b.const_i64(0), b.op("Squeeze", [width]),
                                        b.const_i64(1)])], to=onnx.TensorProto.FLOAT)
    ramp = b.op("Div", [ramp, b.op("Cast", [b.op("Size", [ramp])], to=onnx.TensorProto.FLOAT)])
    eye = b.op("EyeLike", [b.op("MatMul", [b.op("Unsqueeze", [ramp, _axes(b, 1)]),
                                           b.op("Unsqueeze", [ramp, _axes(b, 0)])])])
    noise = b.op("RandomNormalLike", [eye], scale=1e-4, seed=0.0)
    fill = b.op("ConstantOfShape", [b.op("Shape", [ramp])],
                value=numpy_helper.from_array(np.array([0.5], np.float32)))
    y = b.op("Add", [b.op("Add", [y, b.op("Add", [eye, noise])]), b.op("Mul", [ramp, fill])])
    w = b.op("Constant", [], value=numpy_helper.from_array(b.rng.standard_normal(
        (8, 8, 1, 1)).astype(np.float32) * 0.3))
    y = b.op("Relu", [b.op("Conv", [y, w], kernel_shape=[1, 1])])
    y = b.op("Gather", [y, b.const_i64([0, 2, 4, 6])], axis=3)
    return _finish(b, y, 8)


BUILDERS = {name: globals()[name] for name in FAMILIES}


def test_every_rule_family_has_a_model():
    files = {p.stem for p in OPS_DIR.glob("*.py") if p.stem != "__init__"}
    assert files == set(BUILDERS)


def _model(family: str) -> onnx.ModelProto:
    b = Builder(FAMILIES.index(family))
    return b.model([BUILDERS[family](b)], opset=18)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "x.npz"
    np.savez(path, x=np.random.default_rng(0).standard_normal((40, 3, 8, 8)).astype(np.float32))
    return path


@pytest.mark.parametrize("family", FAMILIES)
def test_family_model_has_a_prunable_group_and_uses_its_rules(family):
    from onnxprune.ops import RULES

    model = _model(family)
    family_ops = {op for op, rule in RULES.items() if rule.__module__ == f"onnxprune.ops.{family}"
                  and onnx.defs.has(op, 18) and not onnx.defs.get_schema(op, 18, "").deprecated}
    used = {n.op_type for n in model.graph.node} & family_ops
    assert len(used) >= min(3, len(family_ops)), used
    assert any(g.prunable for g in analyze_channels(model).groups)


@pytest.mark.parametrize("method", ["l1", "autobot"])
@pytest.mark.parametrize("family", FAMILIES)
def test_compress_runs_on_the_family(tmp_path, data, family, method):
    path, out = tmp_path / f"{family}.onnx", tmp_path / "out.onnx"
    onnx.save(_model(family), path)
    report = onnxprune.compress(CompressConfig(
        model=str(path), output=str(out), target=0.6, data=str(data), iterations=3,
        batch_size=8, calibration_samples=16, quiet=True, method=method))
    assert out.exists()
    onnx.checker.check_model(onnx.load(out), full_check=True)
    assert report["macs_after"] < report["macs_before"]
    assert report["macs_after"] <= 0.6 * report["macs_before"]


@pytest.mark.parametrize("op", ["GroupNormalization", "MeanVarianceNormalization"])
def test_analysis_reads_models_with_mixing_norms(op):
    analysis = analyze_channels(_mixing_norm(op))
    assert any(g.prunable for g in analysis.groups)
