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
