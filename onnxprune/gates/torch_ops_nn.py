"""Softmax, linear algebra, convolution, pooling, normalisation, reduction, resize, pad ops."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from onnxprune.gates.torch_ops import RUNTIME, Kernel, NodeSpec, present_inputs, register

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def torch_pad(begins, ends) -> tuple[int, ...]:
    """ONNX per-axis (begins, ends) → F.pad's order (last axis first)."""
    out: list[int] = []
    for b, e in zip(reversed(list(begins)), reversed(list(ends))):
        out += [int(b), int(e)]
    return tuple(out)


def _same_pads(sizes, kernel, strides, dilations, upper: bool) -> tuple[int, ...]:
    begins, ends = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small = total // 2
        begins.append(small if upper else total - small)
        ends.append(total - small if upper else small)
    return torch_pad(begins, ends)


class _Window:
    """Kernel shape, strides, dilations and pads of a Conv or pooling node."""

    def __init__(self, spec: NodeSpec, kernel):
        if kernel is None:
            raise spec.fail("kernel shape unknown (no kernel_shape and no constant weight)")
        self.kernel = tuple(int(k) for k in kernel)
        nd = self.nd = len(self.kernel)
        if nd not in _CONV:
            raise spec.fail(f"{nd}-D windows are not supported")
        self.strides = tuple(spec.attr("strides", [1] * nd))
        self.dilations = tuple(spec.attr("dilations", [1] * nd))
        self.auto_pad = spec.attr("auto_pad", "NOTSET")
        pads = [0] * (2 * nd) if self.auto_pad == "VALID" else spec.attr("pads", [0] * (2 * nd))
        self.begins, self.ends = tuple(pads[:nd]), tuple(pads[nd:])
        self.same = self.auto_pad in ("SAME_UPPER", "SAME_LOWER")
        self.symmetric = self.begins == self.ends and not self.same

    def pad_fn(self, value: float = 0.0) -> Callable:
        """Explicit padding applied before the op (asymmetric or SAME pads)."""
        if self.same:
            upper = self.auto_pad == "SAME_UPPER"
            args = (self.kernel, self.strides, self.dilations, upper)
            return lambda x: F.pad(x, _same_pads(x.shape[2:], *args), value=value)
        pads = torch_pad(self.begins, self.ends)
        return lambda x: F.pad(x, pads, value=value)


def _softmax_factory(torch_fn):
    def factory(spec):
        if spec.opset >= 13:
            axis = spec.attr("axis", -1)
            return Kernel(lambda x: torch_fn(x, axis), (0,))
        axis = spec.attr("axis", 1)

        def fn(x):  # opset < 13: coerce to 2-D at ``axis``
            flat = x.reshape(math.prod(x.shape[:axis]), -1)
            return torch_fn(flat, 1).reshape(x.shape)

        return Kernel(fn, (0,))

    return factory


register("Softmax")(_softmax_factory(F.softmax))
register("LogSoftmax")(_softmax_factory(F.log_softmax))


@register("Gemm")
def _gemm(spec):
    alpha, beta = spec.attr("alpha", 1.0), spec.attr("beta", 1.0)
    trans_a, trans_b = spec.attr("transA", 0), spec.attr("transB", 0)
    if alpha == 1.0 and beta == 1.0 and not trans_a and trans_b:
        return Kernel(lambda a, b, c=None: F.linear(a, b, c), present_inputs(spec))

    def fn(a, b, c=None):
        a = a.t() if trans_a else a
        b = b.t() if trans_b else b
        if c is None:
            return torch.mm(a, b) * alpha if alpha != 1.0 else torch.mm(a, b)
        return torch.addmm(c, a, b, beta=beta, alpha=alpha)

    return Kernel(fn, present_inputs(spec))


@register("Einsum")
def _einsum(spec):
    equation = spec.attr("equation")
    return Kernel(lambda *xs: torch.einsum(equation, *xs), present_inputs(spec))


@register("Conv")
def _conv(spec):
    weight = spec.consts.get(1)
    win = _Window(spec, spec.attr("kernel_shape", None if weight is None else weight.shape[2:]))
    conv, s, d, g = _CONV[win.nd], win.strides, win.dilations, spec.attr("group", 1)
    args = (0, 1, 2) if spec.has(2) else (0, 1)
    if win.symmetric:
        p = win.begins
        return Kernel(lambda x, w, b=None: conv(x, w, b, s, p, d, g), args)
    pad = win.pad_fn()
    return Kernel(lambda x, w, b=None: conv(pad(x), w, b, s, 0, d, g), args)


@register("ConvTranspose")
def _conv_transpose(spec):
    weight = spec.consts.get(1)
    win = _Window(spec, spec.attr("kernel_shape", None if weight is None else weight.shape[2:]))
    if win.same or spec.attr("output_shape") is not None:
        raise spec.fail("auto_pad SAME and output_shape are not supported")
    conv, s, d, g = _CONV_T[win.nd], win.strides, win.dilations, spec.attr("group", 1)
    out_pad = tuple(spec.attr("output_padding", [0] * win.nd))
    args = (0, 1, 2) if spec.has(2) else (0, 1)
    if win.symmetric:
        p = win.begins
        return Kernel(lambda x, w, b=None: conv(x, w, b, s, p, out_pad, g, d), args)
    crop = torch_pad([-b for b in win.begins], [op - e for op, e in zip(out_pad, win.ends)])

    def fn(x, w, b=None):  # full transposed conv, then crop (and extend by output_padding)
        y = F.pad(conv(x, w, None, s, 0, 0, g, d), crop)
        return y if b is None else y + b.reshape((1, -1) + (1,) * win.nd)

    return Kernel(fn, args)


@register("BatchNormalization")
def _batch_norm(spec):
    if spec.attr("training_mode", 0):
        raise spec.fail("training_mode=1 is not supported (inference only)")
    eps = spec.attr("epsilon", 1e-5)
    def fn(x, g, b, m, v):
        return F.batch_norm(x, m, v, g, b, False, 0.0, eps)

    return Kernel(fn, (0, 1, 2, 3, 4))


@register("LayerNormalization")
def _layer_norm(spec):
    axis, eps = spec.attr("axis", -1), spec.attr("epsilon", 1e-5)

    def fn(x, w, b=None):
        shape = x.shape[axis % x.dim():]
        if w.shape == shape and (b is None or b.shape == shape):
            return F.layer_norm(x, shape, w, b, eps)
        dims = tuple(range(axis % x.dim(), x.dim()))
        mean = x.mean(dims, keepdim=True)
        var = (x - mean).pow(2).mean(dims, keepdim=True)
        y = (x - mean) / torch.sqrt(var + eps) * w
        return y if b is None else y + b

    return Kernel(fn, (0, 1, 2) if spec.has(2) else (0, 1))


@register("MaxPool")
def _max_pool(spec):
    win = _Window(spec, spec.attr("kernel_shape"))
    pool, k, s, d = _MAX_POOL[win.nd], win.kernel, win.strides, win.dilations
    ceil = bool(spec.attr("ceil_mode", 0))
    fits = all(2 * b <= kk for b, kk in zip(win.begins, k))
    if win.symmetric and fits:
        p = win.begins
        return Kernel(lambda x: pool(x, k, s, p, d, ceil), (0,))
    pad = win.pad_fn(float("-inf"))
    return Kernel(lambda x: pool(pad(x), k, s, 0, d, ceil), (0,))


@register("AveragePool")
def _avg_pool(spec):
    win = _Window(spec, spec.attr("kernel_shape"))
    if any(d != 1 for d in win.dilations):
        raise spec.fail("dilations are not supported")
    pool, k, s = _AVG_POOL[win.nd], win.kernel, win.strides
    ceil, include = bool(spec.attr("ceil_mode", 0)), bool(spec.attr("count_include_pad", 0))
    fits = all(2 * b <= kk for b, kk in zip(win.begins, k))
    if win.symmetric and fits:
        p = win.begins
        return Kernel(lambda x: pool(x, k, s, p, ceil, include), (0,))
    if not include and any(win.begins + win.ends) or win.same:
        raise spec.fail("asymmetric or SAME pads need count_include_pad=1")
    pad = win.pad_fn()
    return Kernel(lambda x: pool(pad(x), k, s, 0, ceil, True), (0,))


def _global_avg(x):
    if x.dim() == 4:
        return F.adaptive_avg_pool2d(x, 1)
    return x.mean(tuple(range(2, x.dim())), keepdim=True)


register("GlobalAveragePool")(lambda spec: Kernel(_global_avg, (0,)))
register("GlobalMaxPool")(
    lambda spec: Kernel(lambda x: x.amax(tuple(range(2, x.dim())), keepdim=True), (0,))
)

_REDUCE = {"ReduceMean": torch.mean, "ReduceSum": torch.sum, "ReduceMax": torch.amax,
           "ReduceMin": torch.amin}
_AXES_INPUT_SINCE = {"ReduceSum": 13}


@register(*_REDUCE)
def _reduce(spec):
    reduce, keep = _REDUCE[spec.op_type], bool(spec.attr("keepdims", 1))
    noop = bool(spec.attr("noop_with_empty_axes", 0))
    axes = spec.values("axes", 1 if spec.opset >= _AXES_INPUT_SINCE.get(spec.op_type, 18) else None)

    def run(x, ax):
        if not ax:
            return x if noop else reduce(x, tuple(range(x.dim())), keepdim=keep)
        return reduce(x, ax, keepdim=keep)

    if axes is RUNTIME:
        return Kernel(lambda x, a: run(x, tuple(a.tolist())), (0, 1))
    axes = tuple(axes or ())
    return Kernel(lambda x: run(x, axes), (0,))


_COORD = {  # coordinate_transformation_mode → source coordinate of output index i
    "half_pixel": lambda i, scale, n_in, n_out: (i + 0.5) / scale - 0.5,
    "pytorch_half_pixel": lambda i, scale, n_in, n_out: (
        (i + 0.5) / scale - 0.5 if n_out > 1 else i * 0.0),
    "align_corners": lambda i, scale, n_in, n_out: (
        i * ((n_in - 1) / (n_out - 1)) if n_out > 1 else i * 0.0),
    "asymmetric": lambda i, scale, n_in, n_out: i / scale,
    "tf_half_pixel_for_nn": lambda i, scale, n_in, n_out: (i + 0.5) / scale,
}
_ROUND = {
    "round_prefer_floor": lambda c: torch.ceil(c - 0.5),
    "round_prefer_ceil": lambda c: torch.floor(c + 0.5),
    "floor": torch.floor,
    "ceil": torch.ceil,
}


def _resize_axis(x, axis: int, n_out: int, scale: float, mode: str, coord, rounding):
    n_in = x.shape[axis]
    i = torch.arange(n_out, dtype=torch.float32, device=x.device)
    src = coord(i, scale, n_in, n_out)
    view = (-1,) + (1,) * (x.dim() - axis - 1)
    if mode == "nearest":
        index = rounding(src).clamp(0, n_in - 1).long()
        return x.index_select(axis, index)
    src = src.clamp(0, n_in - 1)
    lo = src.floor().long()
    hi = (lo + 1).clamp(max=n_in - 1)
    weight = (src - lo).to(x.dtype).reshape(view)
    a, b = x.index_select(axis, lo), x.index_select(axis, hi)
    return a + (b - a) * weight


def _resize_fn(spec, mode: str, coord_mode: str, nearest_mode: str) -> Callable:
    if mode not in ("nearest", "linear") or coord_mode not in _COORD:
        raise spec.fail(f"mode '{mode}' with '{coord_mode}' coordinates is not supported")
    if spec.attr("antialias", 0) or spec.attr("axes") is not None:
        raise spec.fail("antialias and axes are not supported")
    coord, rounding = _COORD[coord_mode], _ROUND[nearest_mode]

    def fn(x, scales, sizes):
        for axis in range(x.dim()):
            n_in = x.shape[axis]
            if sizes is not None:
                n_out, scale = int(sizes[axis]), int(sizes[axis]) / n_in
            else:
                scale = float(scales[axis])
                n_out = math.floor(n_in * scale)
            if n_out != n_in or scale != 1.0:
                x = _resize_axis(x, axis, n_out, scale, mode, coord, rounding)
        return x

    return fn


def _static_or_runtime(spec, resize, scale_index: int, size_index: int | None) -> Kernel:
    """Bind constant scales/sizes now; read runtime ones per call."""
    scales = spec.values(None, scale_index) if spec.has(scale_index) else None
    has_sizes = size_index is not None and spec.has(size_index)
    sizes = spec.values(None, size_index) if has_sizes else None
    if RUNTIME not in (scales, sizes):
        if scales is not None and len(scales) == 0:
            scales = None
        return Kernel(lambda x: resize(x, scales, sizes), (0,))
    index = size_index if sizes is RUNTIME else scale_index
    if sizes is RUNTIME:
        return Kernel(lambda x, v: resize(x, None, v.tolist()), (0, index))
    return Kernel(lambda x, v: resize(x, v.tolist(), None), (0, index))


@register("Resize")
def _resize(spec):
    mode = spec.attr("mode", "nearest")
    if spec.opset < 11:
        return _static_or_runtime(spec, _resize_fn(spec, mode, "asymmetric", "floor"), 1, None)
    coord = spec.attr("coordinate_transformation_mode", "half_pixel")
    resize = _resize_fn(spec, mode, coord, spec.attr("nearest_mode", "round_prefer_floor"))
    return _static_or_runtime(spec, resize, 2, 3)


@register("Upsample")
def _upsample(spec):
    resize = _resize_fn(spec, spec.attr("mode", "nearest"), "asymmetric", "floor")
    if "scales" in spec.attrs:
        scales = spec.attrs["scales"]
        return Kernel(lambda x: resize(x, scales, None), (0,))
    return _static_or_runtime(spec, resize, 1, None)


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


def _pad_fn(mode: str, pads: list[int], axes, value) -> Callable:
    def fn(x, v=None):
        fill = value if v is None else v.item()
        rank = x.dim()
        ax = list(range(rank)) if axes is None else [a % rank for a in axes]
        begins, ends = [0] * rank, [0] * rank
        for j, a in enumerate(ax):
            begins[a], ends[a] = pads[j], pads[j + len(ax)]
        tp = list(torch_pad(begins, ends))
        while mode != "constant" and len(tp) > 2 and tp[-1] == 0 and tp[-2] == 0:
            tp = tp[:-2]  # reflect/replicate pad only trailing axes
        if mode == "constant":
            return F.pad(x, tp, mode, fill)
        return F.pad(x, tp, mode)

    return fn


@register("Pad")
def _pad(spec):
    mode = _PAD_MODES.get(spec.attr("mode", "constant"))
    if mode is None:
        raise spec.fail(f"mode '{spec.attr('mode')}' is not supported")
    if spec.opset < 11:
        return Kernel(_pad_fn(mode, spec.attr("pads"), None, spec.attr("value", 0.0)), (0,))
    pads, axes = spec.values(None, 1), spec.values(None, 3)
    if RUNTIME in (pads, axes):
        raise spec.fail("pads and axes must be constants")
    value = spec.const(2) if spec.has(2) else None
    if spec.has(2) and value is None:
        return Kernel(_pad_fn(mode, pads, axes, 0.0), (0, 2))
    fill = 0.0 if value is None else value.reshape(-1)[0].item()
    return Kernel(_pad_fn(mode, pads, axes, fill), (0,))
