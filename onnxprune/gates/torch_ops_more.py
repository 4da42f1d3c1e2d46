"""The remaining ops that have a channel rule: simple activations, bit and modulo arithmetic,
the other reductions, arg/top-k/cumulative ops along an axis, space↔depth, Lp pooling, RoI
pooling, the other normalisations, and value generators (EyeLike, Random*).

Every op type that ``onnxprune.ops.RULES`` knows has a kernel here or in ``torch_ops`` /
``torch_ops_nn``, so an op that analysis calls prunable also runs in the executor.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from onnxprune.gates.torch_ops import (
    ONNX_TO_TORCH, RUNTIME, Kernel, NodeSpec, _simple, register,
)
from onnxprune.gates.torch_ops_nn import _Window

# ---- element-wise ---------------------------------------------------------------------------

_FIXED = {  # op type → (torch callable, number of inputs)
    "Sin": (torch.sin, 1), "Cos": (torch.cos, 1), "Round": (torch.round, 1),  # half to even
    "Softsign": (F.softsign, 1), "Mish": (F.mish, 1), "IsNaN": (torch.isnan, 1),
    "Xor": (torch.logical_xor, 2),
}
for _op, (_fn, _arity) in _FIXED.items():
    register(_op)(_simple(_fn, _arity))


def _shrink(lambd: float, bias: float) -> Callable:
    def fn(x):
        zero = torch.zeros_like(x)
        return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, zero))

    return fn


def _is_inf(negative: int, positive: int) -> Callable:
    def fn(x):
        out = torch.zeros_like(x, dtype=torch.bool)
        if negative:
            out = out | torch.isneginf(x)
        if positive:
            out = out | torch.isposinf(x)
        return out

    return fn


_WITH_ATTRS = {  # op type → builder of the one-input callable from the attribute getter
    "Celu": lambda a: (lambda x, alpha=a("alpha", 1.0): F.celu(x, alpha)),
    "ThresholdedRelu": lambda a: (lambda x, alpha=a("alpha", 1.0): F.threshold(x, alpha, 0.0)),
    "Shrink": lambda a: _shrink(a("lambd", 0.5), a("bias", 0.0)),
    "IsInf": lambda a: _is_inf(a("detect_negative", 1), a("detect_positive", 1)),
}


def _with_attrs(spec: NodeSpec) -> Kernel:
    return Kernel(_WITH_ATTRS[spec.op_type](spec.attr), (0,))


register(*_WITH_ATTRS)(_with_attrs)


@register("Mod")
def _mod(spec):
    """fmod=0: the sign of the divisor (integers only in ONNX); fmod=1: of the dividend."""
    return Kernel(torch.fmod if spec.attr("fmod", 0) else torch.remainder, (0, 1))


_UNSIGNED_BITS = {torch.uint16: 16, torch.uint32: 32}


def _logical_right(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """A logical right shift of uint64 bits held in int64 (torch only shifts arithmetically)."""
    once = (x >> 1) & 0x7FFF_FFFF_FFFF_FFFF
    return torch.where(s == 0, x, once >> (s - 1).clamp(min=0))


def _bit_shift_fn(left: bool) -> Callable:
    def fn(x, s):
        if x.dtype == torch.uint8:
            return torch.bitwise_left_shift(x, s) if left else torch.bitwise_right_shift(x, s)
        dtype = x.dtype
        if dtype == torch.uint64:  # same bits in int64
            a, b = torch.broadcast_tensors(x.view(torch.int64), s.view(torch.int64))
            return (a << b if left else _logical_right(a, b)).view(torch.uint64)
        bits = _UNSIGNED_BITS.get(dtype)
        if bits is None:
            raise TypeError(f"BitShift needs an unsigned integer type, got {dtype}")
        a, b = x.to(torch.int64), s.to(torch.int64)
        out = (a << b) & ((1 << bits) - 1) if left else a >> b
        return out.to(dtype)

    return fn


@register("BitShift")
def _bit_shift(spec):
    direction = spec.attr("direction")
    if direction not in ("LEFT", "RIGHT"):
        raise spec.fail(f"direction must be LEFT or RIGHT, got {direction!r}")
    return Kernel(_bit_shift_fn(direction == "LEFT"), (0, 1))


# ---- shapes and generators ------------------------------------------------------------------

register("Size")(lambda spec: Kernel(
    lambda x: torch.tensor(x.numel(), dtype=torch.int64, device=x.device), (0,)))


def _dtype(spec: NodeSpec, default):
    code = spec.attr("dtype")
    if code is None:
        return default
    dtype = ONNX_TO_TORCH.get(code)
    if dtype is None:
        raise spec.fail(f"ONNX type {code} is not supported")
    return dtype


@register("EyeLike")
def _eye_like(spec):
    k = int(spec.attr("k", 0))

    def fn(x):
        rows, cols = x.shape
        ones = torch.ones(rows, cols, device=x.device)
        return ones.triu(k).tril(k).to(_dtype(spec, x.dtype))

    return Kernel(fn, (0,))


class _Draws:
    """Random draws of one node. With a ``seed`` attribute they come from a torch generator
    seeded with it (reproducible in torch, not the same numbers as ONNX Runtime); without one,
    from torch's global generator. ``RandomNormal``/``RandomUniform`` have no runtime input, so
    the executor folds them once per build into a constant draw; the ``*Like`` ops draw anew on
    every call."""

    def __init__(self, spec: NodeSpec):
        normal = spec.op_type.startswith("RandomNormal")
        a, b = ("mean", "scale") if normal else ("low", "high")
        self.first = float(spec.attr(a, 0.0))
        self.second = float(spec.attr(b, 1.0))
        self.normal = normal
        seed = spec.attr("seed")
        self.seed = None if seed is None else int(seed) % 2**64
        self.generators: dict[torch.device, torch.Generator] = {}

    def __call__(self, shape, dtype, device) -> torch.Tensor:
        generator = None
        if self.seed is not None:
            generator = self.generators.get(device)
            if generator is None:
                generator = torch.Generator(device=device).manual_seed(self.seed)
                self.generators[device] = generator
        draw = torch.randn if self.normal else torch.rand
        unit = draw(tuple(shape), generator=generator, dtype=dtype, device=device)
        if self.normal:
            return unit * self.second + self.first
        return unit * (self.second - self.first) + self.first


@register("RandomNormal", "RandomUniform")
def _random(spec):
    draws, shape = _Draws(spec), [int(s) for s in spec.attr("shape")]
    dtype = _dtype(spec, torch.float32)
    return Kernel(lambda: draws(shape, dtype, torch.device("cpu")), ())


@register("RandomNormalLike", "RandomUniformLike")
def _random_like(spec):
    draws = _Draws(spec)
    return Kernel(lambda x: draws(x.shape, _dtype(spec, x.dtype), x.device), (0,))


# ---- reductions -----------------------------------------------------------------------------

def _prod(x, dims, keep):
    for dim in sorted(dims, reverse=True):
        x = torch.prod(x, dim, keepdim=keep)
    return x


_REDUCE = {  # op type → (reduce(x, dims, keepdim), map applied alone when reducing no axis)
    "ReduceL1": (lambda x, d, k: x.abs().sum(d, keepdim=k), torch.abs),
    "ReduceL2": (lambda x, d, k: x.square().sum(d, keepdim=k).sqrt(), torch.abs),
    "ReduceLogSum": (lambda x, d, k: x.sum(d, keepdim=k).log(), torch.log),
    "ReduceLogSumExp": (lambda x, d, k: torch.logsumexp(x, d, keepdim=k), lambda x: x),
    "ReduceProd": (_prod, lambda x: x),
    "ReduceSumSquare": (lambda x, d, k: x.square().sum(d, keepdim=k), torch.square),
}


@register(*_REDUCE)
def _reduce(spec):
    """Axes are an attribute before opset 18 and an input from 18; no axes means all of them
    unless ``noop_with_empty_axes`` (then only the element-wise part runs)."""
    reduce, alone = _REDUCE[spec.op_type]
    keep, noop = bool(spec.attr("keepdims", 1)), bool(spec.attr("noop_with_empty_axes", 0))
    axes = spec.values("axes", 1 if spec.opset >= 18 else None)

    def run(x, ax):
        if not ax and noop:
            return alone(x)
        dims = tuple(sorted({a % x.dim() for a in ax})) if ax else tuple(range(x.dim()))
        out = reduce(x, dims, keep) if dims else alone(x)
        return out.to(x.dtype)  # torch widens integer sums and products to int64

    if axes is RUNTIME:
        return Kernel(lambda x, a: run(x, tuple(a.tolist())), (0, 1))
    axes = tuple(int(a) for a in np.ravel(axes if axes is not None else []))
    return Kernel(lambda x: run(x, axes), (0,))


# ---- along one axis -------------------------------------------------------------------------

@register("ArgMax", "ArgMin")
def _arg(spec):
    pick = torch.argmax if spec.op_type == "ArgMax" else torch.argmin
    axis, keep = spec.attr("axis", 0), bool(spec.attr("keepdims", 1))
    last = bool(spec.attr("select_last_index", 0))

    def fn(x):
        ax = axis % x.dim()
        if not last:  # torch returns the first extreme index, as ONNX asks by default
            return pick(x, ax, keepdim=keep)
        return x.shape[ax] - 1 - pick(x.flip(ax), ax, keepdim=keep)

    return Kernel(fn, (0,))


@register("Hardmax")
def _hardmax(spec):
    """One-hot of the first maximum along ``axis``; before opset 13 over the input coerced to
    2-D at ``axis`` (default 1)."""

    def one_hot(x, ax):
        index = torch.argmax(x, ax, keepdim=True)
        return torch.zeros_like(x).scatter(ax, index, 1.0)

    if spec.opset >= 13:
        axis = spec.attr("axis", -1)
        return Kernel(lambda x: one_hot(x, axis % x.dim()), (0,))
    axis = spec.attr("axis", 1)

    def coerced(x):
        flat = x.reshape(math.prod(x.shape[: axis % x.dim()]), -1)
        return one_hot(flat, 1).reshape(x.shape)

    return Kernel(coerced, (0,))


def _scalar(value) -> int:
    return int(np.ravel(value)[0])


def _cumsum_fn(exclusive: bool, reverse: bool) -> Callable:
    def run(x, axis: int):
        ax = axis % x.dim()
        if reverse:
            x = x.flip(ax)
        out = torch.cumsum(x, ax, dtype=x.dtype)
        if exclusive:  # shift by one, so each sum stops before its own element
            head = torch.zeros_like(x.narrow(ax, 0, 1))
            out = torch.cat([head, out.narrow(ax, 0, x.shape[ax] - 1)], ax)
        return out.flip(ax) if reverse else out

    return run


@register("CumSum")
def _cumsum(spec):
    run = _cumsum_fn(bool(spec.attr("exclusive", 0)), bool(spec.attr("reverse", 0)))
    axis = spec.values(None, 1)
    if axis is RUNTIME:
        return Kernel(lambda x, a: run(x, _scalar(a.tolist())), (0, 1))
    axis = _scalar(axis)
    return Kernel(lambda x: run(x, axis), (0,))


def _top_k(x, k: int, axis: int, largest: bool):
    """The k largest (smallest) along ``axis``; equal values keep the lower index first."""
    ax = axis % x.dim()
    values, indices = torch.sort(x, dim=ax, descending=largest, stable=True)
    return values.narrow(ax, 0, k), indices.narrow(ax, 0, k)


@register("TopK")
def _topk(spec):
    """k is an attribute in opset 1 and an input from 10. ``sorted=0`` leaves the order
    unspecified, so sorted output is valid for it too."""
    axis, largest = spec.attr("axis", -1), bool(spec.attr("largest", 1))
    k = spec.attr("k") if spec.opset < 10 else spec.values(None, 1)
    if k is RUNTIME:
        return Kernel(lambda x, kk: _top_k(x, _scalar(kk.tolist()), axis, largest), (0, 1), 2)
    k = _scalar(k)
    return Kernel(lambda x: _top_k(x, k, axis, largest), (0,), 2)


# ---- space ↔ depth --------------------------------------------------------------------------

@register("DepthToSpace")
def _depth_to_space(spec):
    """DCR (default): depth is (block, block, channel); CRD (opset 11+): (channel, block, block)."""
    b, crd = int(spec.attr("blocksize")), spec.attr("mode", "DCR") == "CRD"

    def fn(x):
        n, c, h, w = x.shape
        if crd:
            y = x.reshape(n, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
        else:
            y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
        return y.reshape(n, c // (b * b), h * b, w * b)

    return Kernel(fn, (0,))


@register("SpaceToDepth")
def _space_to_depth(spec):
    b = int(spec.attr("blocksize"))

    def fn(x):
        n, c, h, w = x.shape
        y = x.reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
        return y.reshape(n, c * b * b, h // b, w // b)

    return Kernel(fn, (0,))


# ---- Lp and RoI pooling ---------------------------------------------------------------------

_SUM_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _ceil_extra(sizes, win: _Window) -> list[int]:
    """Zeros to add after each (padded) axis so that a floor-mode window count equals ceil
    mode's, where a last window that would start in the end padding is dropped."""
    extra = []
    for size, k, s, d, end in zip(sizes, win.kernel, win.strides, win.dilations, win.ends):
        span = d * (k - 1) + 1
        count = -(-(size - span) // s) + 1
        if (count - 1) * s >= size - end:
            count -= 1
        extra.append(max((count - 1) * s + span - size, 0))
    return extra


@register("LpPool")
def _lp_pool(spec):
    """(Σ |x|^p)^(1/p) over each window: a depthwise sum-convolution of |x|^p; zero padding
    adds nothing. p is a float attribute in opset 1, an int from 2; dilations and ceil_mode
    from opset 18."""
    win = _Window(spec, spec.attr("kernel_shape"))
    p, ceil = float(spec.attr("p", 2)), bool(spec.attr("ceil_mode", 0))
    pad, conv = win.pad_fn(), _SUM_CONV[win.nd]

    def fn(x):
        y = pad(x.abs().pow(p) if p != 1.0 else x.abs())
        if ceil and not win.same:  # SAME pads already give ceil(size / stride) windows
            extra = _ceil_extra(y.shape[2:], win)
            y = F.pad(y, [v for e in reversed(extra) for v in (0, e)])
        ones = torch.ones((x.shape[1], 1, *win.kernel), dtype=x.dtype, device=x.device)
        total = conv(y, ones, None, win.strides, 0, win.dilations, x.shape[1])
        return total.pow(1.0 / p) if p != 1.0 else total

    return Kernel(fn, (0,))


@register("GlobalLpPool")
def _global_lp_pool(spec):
    p = float(spec.attr("p", 2))

    def fn(x):
        dims = tuple(range(2, x.dim()))
        return x.abs().pow(p).sum(dims, keepdim=True).pow(1.0 / p)

    return Kernel(fn, (0,))


def _round_away(v: float) -> int:
    """C's round(): halves away from zero (torch and Python round halves to even)."""
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def _roi_bins(start: int, end: int, pooled: int, size: int) -> list[tuple[int, int]]:
    """The [begin, end) input range of each of ``pooled`` bins over one RoI axis."""
    length = max(end - start + 1, 1)
    step = length / pooled
    bins = []
    for i in range(pooled):
        lo = min(max(math.floor(i * step) + start, 0), size)
        hi = min(max(math.ceil((i + 1) * step) + start, 0), size)
        bins.append((lo, hi))
    return bins


def _roi_pool_one(x, roi, pooled, scale):
    """Max over each bin of one RoI ``(batch, x1, y1, x2, y2)``; an empty bin is 0."""
    batch, x1, y1, x2, y2 = roi
    image = x[int(batch)]
    rows = _roi_bins(_round_away(y1 * scale), _round_away(y2 * scale), pooled[0], x.shape[2])
    cols = _roi_bins(_round_away(x1 * scale), _round_away(x2 * scale), pooled[1], x.shape[3])
    zero = image.new_zeros(image.shape[0])
    out = [[image[:, r0:r1, c0:c1].amax((1, 2)) if r1 > r0 and c1 > c0 else zero
            for c0, c1 in cols] for r0, r1 in rows]
    return torch.stack([torch.stack(row, -1) for row in out], -2)


@register("MaxRoiPool")
def _max_roi_pool(spec):
    pooled = tuple(int(v) for v in spec.attr("pooled_shape"))
    scale = float(spec.attr("spatial_scale", 1.0))

    def fn(x, rois):
        boxes = rois.detach().cpu().tolist()
        if not boxes:
            return x.new_zeros((0, x.shape[1], *pooled))
        return torch.stack([_roi_pool_one(x, roi, pooled, scale) for roi in boxes])

    return Kernel(fn, (0, 1))


# ---- normalisations -------------------------------------------------------------------------

@register("InstanceNormalization")
def _instance_norm(spec):
    eps = spec.attr("epsilon", 1e-5)
    return Kernel(lambda x, g, b: F.instance_norm(x, weight=g, bias=b, eps=eps), (0, 1, 2))


@register("GroupNormalization")
def _group_norm(spec):
    """Opset 18 has one scale/bias per group, opset 21 one per channel."""
    groups, eps = int(spec.attr("num_groups")), spec.attr("epsilon", 1e-5)
    per_group = spec.opset < 21

    def fn(x, g, b):
        if per_group:
            g, b = (t.repeat_interleave(x.shape[1] // groups) for t in (g, b))
        return F.group_norm(x, groups, g, b, eps)

    return Kernel(fn, (0, 1, 2))


@register("LRN")
def _lrn(spec):
    """x / (bias + alpha/size · Σ x²)^beta over the channels [c - ⌊(size-1)/2⌋,
    c + ⌈(size-1)/2⌉] (torch's local_response_norm centres even sizes the other way)."""
    size = int(spec.attr("size"))
    alpha, beta, bias = spec.attr("alpha", 1e-4), spec.attr("beta", 0.75), spec.attr("bias", 1.0)
    before, after = (size - 1) // 2, size // 2

    def fn(x):
        sq, c = x.square(), x.shape[1]
        zeros = [sq.new_zeros((sq.shape[0], n, *sq.shape[2:])) for n in (before, after)]
        padded = torch.cat([zeros[0], sq, zeros[1]], 1)
        total = sum(padded.narrow(1, i, c) for i in range(size))
        return x / (bias + alpha / size * total).pow(beta)

    return Kernel(fn, (0,))


@register("LpNormalization")
def _lp_norm(spec):
    axis, p = spec.attr("axis", -1), int(spec.attr("p", 2))
    if p not in (1, 2):
        raise spec.fail(f"p must be 1 or 2, got {p}")

    def fn(x):
        norm = torch.linalg.vector_norm(x, p, dim=axis, keepdim=True)
        return x / torch.where(norm == 0, torch.ones_like(norm), norm)  # all-zero stays zero

    return Kernel(fn, (0,))


@register("MeanVarianceNormalization")
def _mvn(spec):
    axes = tuple(spec.attr("axes", [0, 2, 3]))

    def fn(x):
        dims = tuple(a % x.dim() for a in axes)
        centred = x - x.mean(dims, keepdim=True)
        std = centred.square().mean(dims, keepdim=True).sqrt()
        return centred / (std + 1e-9)

    return Kernel(fn, (0,))

