"""Representative third-party graph shapes (issue 12), built in code with dynamic H/W.

Each builder returns ``(model, input_shapes, run_shapes)``: the model declares its spatial
dims symbolic, ``input_shapes`` is the size to analyse at (what ``--input-shape`` gives) and
``run_shapes`` two sizes the pruned model must run at in ONNX Runtime. ``check_dynamic_plans``
is ``archs.check_random_plans`` for such models.
"""

from __future__ import annotations

import numpy as np
import onnx
from archs import Builder, _named, assert_close, io_signature, random_keep, run_ort
from onnx import TensorProto, helper, numpy_helper

from onnxprune.analysis.groups import analyze_channels, keep_mask
from onnxprune.analysis.summary import count_macs
from onnxprune.surgery import masked_reference, prune_model

TIGHT = 1e-4


def check_dynamic_plans(model, input_shapes, run_shapes, plans: int = 3, seed: int = 0):
    """Random plans pruned equal to their masked reference at every size in ``run_shapes``."""
    model = _named(model)
    analysis = analyze_channels(model, input_shapes=input_shapes)
    rng = np.random.default_rng(seed)
    for keep in [{}] + [random_keep(analysis, rng) for _ in range(plans)]:
        formula = analysis.macs(keep_mask(analysis, keep))
        pruned = prune_model(model, keep, input_shapes=input_shapes)
        reference = masked_reference(model, keep, input_shapes=input_shapes)
        onnx.checker.check_model(pruned, full_check=True)
        assert io_signature(pruned) == io_signature(model)
        assert count_macs(pruned, input_shapes=input_shapes) == formula
        for number, shapes in enumerate(run_shapes):
            feeds = _feeds(model, shapes, seed + number)
            assert_close(run_ort(pruned, feeds), run_ort(reference, feeds), TIGHT)
    return analysis


def _feeds(model, shapes, seed):
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, elem, _ in io_signature(model)[0]:
        dtype = helper.tensor_dtype_to_np_dtype(elem)
        feeds[name] = rng.standard_normal(shapes[name]).astype(dtype)
    return feeds


def prunable_share(analysis) -> float:
    return analysis.prunable_macs() / max(analysis.macs(), 1)


def _finish(b: Builder, outputs, opset: int = 17) -> onnx.ModelProto:
    return b.model(outputs, opset=opset)


# --- a YOLOv8-style detector --------------------------------------------------------------------


def _silu_conv(b: Builder, x: str, cin: int, cout: int, k: int = 3, stride: int = 1) -> str:
    y = b.conv(x, cin, cout, k=k, stride=stride)
    return b.op("Mul", [y, b.op("Sigmoid", [y])])


def _c2f(b: Builder, x: str, cin: int, cout: int, n: int = 1, shortcut: bool = True) -> str:
    hidden = cout // 2
    y = _silu_conv(b, x, cin, 2 * hidden, k=1)
    parts = list(b.op("Split", [y, b.const_i64([hidden, hidden])], outputs=2, axis=1))
    for _ in range(n):
        z = _silu_conv(b, _silu_conv(b, parts[-1], hidden, hidden), hidden, hidden)
        parts.append(b.op("Add", [parts[-1], z]) if shortcut else z)
    return _silu_conv(b, b.op("Concat", parts, axis=1), (2 + n) * hidden, cout, k=1)


def _sppf(b: Builder, x: str, c: int) -> str:
    hidden = c // 2
    y = _silu_conv(b, x, c, hidden, k=1)
    pools = [y]
    for _ in range(3):
        pools.append(b.op("MaxPool", [pools[-1]], kernel_shape=[5, 5], pads=[2] * 4,
                          strides=[1, 1]))
    return _silu_conv(b, b.op("Concat", pools, axis=1), 4 * hidden, c, k=1)


def _upsample(b: Builder, x: str) -> str:
    scales = b.init(np.array([1, 1, 2, 2], dtype=np.float32), "scales")
    return b.op("Resize", [x, "", scales], mode="nearest")


def _flat_anchors(b: Builder, x: str, channels: int) -> str:
    """(N, C, H, W) -> (N, C, H*W) with the target computed from Shape (as exporters write it)."""
    n = b.op("Gather", [b.op("Shape", [x]), b.const_i64([0])], axis=0)
    target = b.op("Concat", [n, b.const_i64([channels]), b.const_i64([-1])], axis=0)
    return b.op("Reshape", [x, target])


def yolov8_detector(reg_max: int = 4, classes: int = 3):
    """Backbone of C2f blocks, SPPF, a PAN neck with upsampling, a decoupled head with DFL."""
    b = Builder(12)
    x = b.input("images", [1, 3, "height", "width"])
    c = [8, 16, 24, 32]
    y = _silu_conv(b, x, 3, c[0], stride=2)
    y = _c2f(b, _silu_conv(b, y, c[0], c[1], stride=2), c[1], c[1])  # /4
    p3 = _c2f(b, _silu_conv(b, y, c[1], c[2], stride=2), c[2], c[2])  # /8
    p4 = _c2f(b, _silu_conv(b, p3, c[2], c[3], stride=2), c[3], c[3])  # /16
    p5 = _sppf(b, _c2f(b, _silu_conv(b, p4, c[3], c[3], stride=2), c[3], c[3]), c[3])  # /32
    n4 = _c2f(b, b.op("Concat", [_upsample(b, p5), p4], axis=1), 2 * c[3], c[3], shortcut=False)
    n3 = _c2f(b, b.op("Concat", [_upsample(b, n4), p3], axis=1), c[3] + c[2], c[2],
              shortcut=False)
    d4 = _c2f(b, b.op("Concat", [_silu_conv(b, n3, c[2], c[2], stride=2), n4], axis=1),
              c[2] + c[3], c[3], shortcut=False)
    levels = []
    for feat, ch in ((n3, c[2]), (d4, c[3])):
        box = _silu_conv(b, _silu_conv(b, feat, ch, 16), 16, 16)
        box = b.conv(box, 16, 4 * reg_max, k=1)
        cls = _silu_conv(b, _silu_conv(b, feat, ch, 16), 16, 16)
        cls = b.conv(cls, 16, classes, k=1)
        levels.append(_flat_anchors(b, b.op("Concat", [box, cls], axis=1), 4 * reg_max + classes))
    anchors = b.op("Concat", levels, axis=2)
    box, cls = b.op("Split", [anchors, b.const_i64([4 * reg_max, classes])], outputs=2, axis=1)
    dist = b.op("Softmax", [b.op("Transpose", [b.op("Reshape", [box, b.const_i64(
        [1, 4, reg_max, -1])])], perm=[0, 2, 1, 3])], axis=1)
    proj = b.init(np.arange(reg_max, dtype=np.float32).reshape(1, reg_max, 1, 1), "dfl")
    dist = b.op("Reshape", [b.op("Conv", [dist, proj], kernel_shape=[1, 1]),
                            b.const_i64([1, 4, -1])])
    out = b.op("Concat", [dist, b.op("Sigmoid", [cls])], axis=1)
    model = _finish(b, [out])
    return model, {"images": (1, 3, 64, 64)}, [{"images": (1, 3, 64, 64)},
                                                {"images": (1, 3, 96, 128)}]


# --- a PP-OCR-style text recognizer ---------------------------------------------------------


def _conv2(b: Builder, x: str, cin: int, cout: int, k=(3, 3), stride=(1, 1), act="HardSwish"):
    pads = [k[0] // 2, k[1] // 2, k[0] // 2, k[1] // 2]
    y = b.op("Conv", [x, b.weight(cout, cin, *k), b.init(
        (b.rng.standard_normal(cout) * 0.1).astype(np.float32), "b")],
        kernel_shape=list(k), pads=pads, strides=list(stride))
    return b.op(act, [y]) if act else y


def ppocr_recognizer(classes: int = 11):
    """Conv backbone down to height 1, Reshape (target from Shape->Gather->Concat) and
    Transpose into a sequence, MatMul layers over the channels, Softmax over classes."""
    b = Builder(21)
    x = b.input("x", ["batch", 3, 32, "width"])
    y = _conv2(b, x, 3, 8, stride=(2, 2))  # 16 x W/2
    y = _conv2(b, y, 8, 8, k=(3, 3))
    y = _conv2(b, y, 8, 8, k=(3, 3), act=None)
    y = b.op("HardSwish", [b.op("Add", [y, _conv2(b, y, 8, 8, k=(1, 1), act=None)])])
    y = _conv2(b, y, 8, 16, stride=(2, 1))  # 8
    y = _conv2(b, y, 16, 16, k=(1, 1))
    y = _conv2(b, y, 16, 24, stride=(2, 1))  # 4
    y = _conv2(b, y, 24, 32, stride=(2, 1))  # 2
    y = b.op("MaxPool", [y], kernel_shape=[2, 1], strides=[2, 1])  # 1 x W/2
    y = _conv2(b, y, 32, 32, k=(1, 3))
    shape = b.op("Shape", [y])
    n = b.op("Gather", [shape, b.const_i64([0])], axis=0)
    w = b.op("Gather", [shape, b.const_i64([3])], axis=0)
    channels = b.op("Gather", [shape, b.const_i64([1])], axis=0)
    seq = b.op("Reshape", [y, b.op("Concat", [n, channels, w], axis=0)])  # (N, C, W)
    seq = b.op("Transpose", [seq], perm=[0, 2, 1])  # (N, W, C)
    for cin, cout in ((32, 24), (24, 24)):
        lin = b.op("Add", [b.op("MatMul", [seq, b.weight(cin, cout, scale=1 / np.sqrt(cin))]),
                           b.init((b.rng.standard_normal(cout) * 0.1).astype(np.float32), "b")])
        seq = b.op("HardSwish", [lin])
    logits = b.op("MatMul", [seq, b.weight(24, classes, scale=0.2)])
    out = b.op("Softmax", [logits], axis=2)
    model = _finish(b, [out])
    return model, {"x": (1, 3, 32, 64)}, [{"x": (1, 3, 32, 64)}, {"x": (2, 3, 32, 100)}]


# --- an NHWC classifier converted from TF/Keras -------------------------------------------------


def nhwc_classifier(classes: int = 5):
    """NHWC input, Transpose around each conv, Pad in NHWC with pads from a constant expression
    (Cast of a Concat of Constants), a residual Add in NHWC, ReduceMean and MatMul head."""
    b = Builder(31)
    x = b.input("input_1:0", ["N", "H", "W", 3])

    def nchw_conv(t, cin, cout, k=3, stride=1, pad=True):
        y = b.op("Transpose", [t], perm=[0, 3, 1, 2])
        y = b.op("Conv", [y, b.weight(cout, cin, k, k), b.init(
            (b.rng.standard_normal(cout) * 0.1).astype(np.float32), "b")], kernel_shape=[k, k],
            pads=[k // 2 if pad else 0] * 4, strides=[stride, stride])
        return b.op("Transpose", [b.op("Relu", [y])], perm=[0, 2, 3, 1])

    y = nchw_conv(x, 3, 8, stride=2)
    halves = [b.op("Constant", [], value=numpy_helper.from_array(
        np.array(v, dtype=np.int32))) for v in ([0, 1, 1, 0], [0, 1, 1, 0])]
    pads = b.op("Cast", [b.op("Concat", halves, axis=0)], to=TensorProto.INT64)
    y = nchw_conv(b.op("Pad", [y, pads], mode="constant"), 8, 16, pad=False)
    z = nchw_conv(y, 16, 16)
    y = b.op("Add", [y, nchw_conv(z, 16, 16)])
    y = nchw_conv(y, 16, 24, stride=2)
    pooled = b.op("ReduceMean", [y], axes=[1, 2], keepdims=0)
    logits = b.op("Add", [b.op("MatMul", [pooled, b.weight(24, classes, scale=0.2)]),
                          b.init(np.zeros(classes, dtype=np.float32), "b")])
    model = _finish(b, [b.op("Softmax", [logits], axis=1)], opset=17)
    return model, {"input_1:0": (1, 32, 32, 3)}, [{"input_1:0": (1, 32, 32, 3)},
                                                  {"input_1:0": (2, 40, 24, 3)}]


# --- an opset-9 model with computed weights and Sum residuals -------------------------------------


def opset9_computed_weights(ir_version: int = 4):
    """Weights from Reshape of Constants, ConstantOfShape biases, fp16 weights behind Cast,
    Identity chains; residuals joined by Sum; opset 9."""
    b = Builder(41)
    x = b.input("data", ["N", 3, "H", "W"])
    rng = b.rng

    def const(array):
        return b.op("Constant", [], value=numpy_helper.from_array(np.asarray(array)))

    def reshaped_weight(cout, cin, k):  # an old exporter's Reshape(Constant, Constant)
        flat = (rng.standard_normal(cout * cin * k * k) / np.sqrt(cin * k * k)).astype(np.float32)
        return b.op("Reshape", [const(flat), const(np.array([cout, cin, k, k], np.int64))])

    def zero_bias(cout):
        return b.op("ConstantOfShape", [const(np.array([cout], np.int64))],
                    value=numpy_helper.from_array(np.array([0.05], np.float32)))

    def fp16_weight(cout, cin, k):
        w = (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float16)
        return b.op("Cast", [b.init(w, "w16")], to=TensorProto.FLOAT)

    def conv(t, w, bias, k=3, stride=1):
        return b.op("Relu", [b.op("Conv", [t, w, bias], kernel_shape=[k, k], pads=[k // 2] * 4,
                                  strides=[stride, stride])])

    y = conv(x, reshaped_weight(12, 3, 3), zero_bias(12), stride=2)
    a = conv(y, fp16_weight(12, 12, 3), zero_bias(12))
    c = conv(a, b.op("Identity", [b.op("Identity", [reshaped_weight(12, 12, 1)])]),
             zero_bias(12), k=1)
    y = b.op("Sum", [y, a, c])
    y = b.bn(y, 12)
    z = conv(y, fp16_weight(16, 12, 3), b.op("Cast", [b.init(
        np.full(16, 0.1, np.float16), "b16")], to=TensorProto.FLOAT), stride=2)
    z2 = conv(z, reshaped_weight(16, 16, 3), zero_bias(16))
    y = b.op("Sum", [z, z2])
    y = b.op("Flatten", [b.op("GlobalAveragePool", [y])], axis=1)
    w = b.op("Mul", [const(rng.standard_normal((4, 16)).astype(np.float32)), const(
        np.float32(0.25))])
    out = b.op("Gemm", [y, w, zero_bias(4)], transB=1)
    model = _finish(b, [out], opset=9)
    model.ir_version = ir_version
    return model, {"data": (1, 3, 16, 16)}, [{"data": (1, 3, 16, 16)}, {"data": (2, 3, 20, 12)}]
