"""The op table: ONNX op type → a factory that turns one node into a torch kernel.

A factory reads the node's attributes (and constant inputs that act as attributes, such as a
Reshape's shape) once, at construction, and returns a ``Kernel``: a callable over the node's
runtime inputs, the input positions it reads, and how many outputs it returns. Tensor-valued
constants (weights) stay runtime arguments, so they live in buffers that move with ``.to()``.
This file holds the table, elementwise and tensor-manipulation ops; ``torch_ops_nn`` registers
softmax, linear algebra, convolution, pooling, normalisation, resize and pad ops into it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from onnxprune.registry import registrar
from onnxprune.errors import OnnxPruneError


class Kernel(NamedTuple):
    """A compiled node: ``fn(*inputs[args])`` returns one tensor, or a tuple when ``n_out > 1``."""

    fn: Callable
    args: tuple[int, ...]
    n_out: int = 1


RUNTIME = object()  # marks a parameter that only a runtime tensor knows

ONNX_TO_TORCH = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.FLOAT16: torch.float16,
    onnx.TensorProto.BFLOAT16: torch.bfloat16,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.INT16: torch.int16,
    onnx.TensorProto.INT8: torch.int8,
    onnx.TensorProto.UINT8: torch.uint8,
    onnx.TensorProto.BOOL: torch.bool,
}


class NodeSpec:
    """What a factory may know about a node: attributes, opset and constant inputs."""

    def __init__(self, node: onnx.NodeProto, opset: int, consts: dict[int, torch.Tensor]):
        self.name = node.name
        self.op_type = node.op_type
        self.inputs = list(node.input)
        self.outputs = list(node.output)
        self.opset = opset
        self.consts = consts
        self.attrs = {a.name: _attr_value(a) for a in node.attribute}

    def attr(self, key: str, default=None):
        return self.attrs.get(key, default)

    def has(self, index: int) -> bool:
        return index < len(self.inputs) and bool(self.inputs[index])

    def const(self, index: int) -> np.ndarray | None:
        tensor = self.consts.get(index)
        return None if tensor is None else tensor.detach().cpu().numpy()

    def values(self, attr: str | None, index: int | None, default=None):
        """A parameter given as attribute or as (constant) input; ``RUNTIME`` if only known then."""
        if attr is not None and attr in self.attrs:
            return self.attrs[attr]
        if index is not None and self.has(index):
            value = self.const(index)
            return RUNTIME if value is None else value.tolist()
        return default

    def fail(self, message: str) -> OnnxPruneError:
        return OnnxPruneError(f"node '{self.name}' ({self.op_type}): {message}")


def _attr_value(attr: onnx.AttributeProto):
    if attr.type == onnx.AttributeProto.TENSOR:
        return numpy_helper.to_array(attr.t)
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value


OPS: dict[str, Callable[[NodeSpec], Kernel]] = {}


register = registrar(OPS, "a torch kernel")  # register(*op_types)(factory)


def _simple(fn: Callable, arity: int = 1) -> Callable[[NodeSpec], Kernel]:
    return lambda spec: Kernel(fn, tuple(range(arity)))


def _identity(x):
    return x


def _div(a, b):
    if a.is_floating_point():
        return torch.div(a, b)
    return torch.div(a, b, rounding_mode="trunc")


_FIXED = {  # op type → (torch callable, number of inputs)
    "Relu": (F.relu, 1), "Sigmoid": (torch.sigmoid, 1), "Tanh": (torch.tanh, 1),
    "Erf": (torch.erf, 1), "Sqrt": (torch.sqrt, 1), "Neg": (torch.neg, 1), "Exp": (torch.exp, 1),
    "Log": (torch.log, 1), "Abs": (torch.abs, 1), "Reciprocal": (torch.reciprocal, 1),
    "Softplus": (F.softplus, 1), "HardSwish": (F.hardswish, 1), "Floor": (torch.floor, 1),
    "Ceil": (torch.ceil, 1), "Sign": (torch.sign, 1), "Not": (torch.logical_not, 1),
    "Identity": (_identity, 1), "Dropout": (_identity, 1),
    "Add": (torch.add, 2), "Sub": (torch.sub, 2), "Mul": (torch.mul, 2), "Div": (_div, 2),
    "Pow": (torch.pow, 2), "Equal": (torch.eq, 2), "Less": (torch.lt, 2),
    "Greater": (torch.gt, 2), "LessOrEqual": (torch.le, 2), "GreaterOrEqual": (torch.ge, 2),
    "And": (torch.logical_and, 2), "Or": (torch.logical_or, 2), "MatMul": (torch.matmul, 2),
    "Where": (torch.where, 3),
}
for _op, (_fn, _arity) in _FIXED.items():
    register(_op)(_simple(_fn, _arity))


def present_inputs(spec: NodeSpec) -> tuple[int, ...]:
    """Positions of the inputs the node actually has (optional ones may be empty)."""
    return tuple(i for i in range(len(spec.inputs)) if spec.has(i))


_VARIADIC = {"Max": torch.maximum, "Min": torch.minimum, "Sum": torch.add}


@register("Max", "Min", "Sum", "Mean")
def _variadic(spec: NodeSpec) -> Kernel:
    combine = _VARIADIC.get(spec.op_type, torch.add)
    scale = 1.0 / len(present_inputs(spec)) if spec.op_type == "Mean" else None

    def fn(*xs):
        out = functools.reduce(combine, xs)
        return out * scale if scale is not None else out

    return Kernel(fn, present_inputs(spec))


# ---- activations with attributes -------------------------------------------------------------

@register("LeakyRelu")
def _leaky_relu(spec):
    alpha = spec.attr("alpha", 0.01)
    return Kernel(lambda x: F.leaky_relu(x, alpha), (0,))


@register("Elu")
def _elu(spec):
    alpha = spec.attr("alpha", 1.0)
    return Kernel(lambda x: F.elu(x, alpha), (0,))


@register("Selu")
def _selu(spec):
    alpha = spec.attr("alpha", 1.67326319217681884765625)
    gamma = spec.attr("gamma", 1.05070102214813232421875)
    return Kernel(lambda x: gamma * F.elu(x, alpha), (0,))


@register("HardSigmoid")
def _hard_sigmoid(spec):
    alpha, beta = spec.attr("alpha", 0.2), spec.attr("beta", 0.5)
    if abs(alpha - 1 / 6) < 1e-7 and beta == 0.5:
        return Kernel(F.hardsigmoid, (0,))
    return Kernel(lambda x: torch.clamp(x * alpha + beta, 0.0, 1.0), (0,))


@register("Gelu")
def _gelu(spec):
    approximate = spec.attr("approximate", "none")
    return Kernel(lambda x: F.gelu(x, approximate=approximate), (0,))


@register("PRelu")
def _prelu(spec):
    return Kernel(lambda x, slope: torch.where(x >= 0, x, x * slope), (0, 1))


@register("Clip")
def _clip(spec):
    lo = spec.values("min", 1)
    hi = spec.values("max", 2)
    if lo is RUNTIME or hi is RUNTIME:
        return Kernel(lambda x, a=None, b=None: torch.clamp(x, a, b), present_inputs(spec))
    lo = None if lo is None else float(lo)
    hi = None if hi is None else float(hi)
    if lo == 0.0 and hi is None:
        return Kernel(F.relu, (0,))
    if lo is not None and hi is not None:
        return Kernel(lambda x: F.hardtanh(x, lo, hi), (0,))
    return Kernel(lambda x: torch.clamp(x, lo, hi), (0,))


# ---- shapes and tensor manipulation -----------------------------------------------------------

@register("Constant")
def _constant(spec):
    for key, kind in (("value", None), ("value_float", torch.float32),
                      ("value_floats", torch.float32), ("value_int", torch.int64),
                      ("value_ints", torch.int64)):
        if key in spec.attrs:
            value = spec.attrs[key]
            if kind is None:
                tensor = torch.from_numpy(np.array(value))
            else:
                tensor = torch.tensor(value, dtype=kind)
            return Kernel(lambda: tensor, ())
    raise spec.fail("only numeric 'value*' attributes are supported")


@register("ConstantOfShape")
def _constant_of_shape(spec):
    value = spec.attr("value")
    value = np.zeros(1, np.float32) if value is None else value
    fill, dtype = value.reshape(-1)[0].item(), torch.from_numpy(value).dtype
    return Kernel(lambda s: torch.full(tuple(s.tolist()), fill, dtype=dtype, device=s.device), (0,))


@register("Shape")
def _shape(spec):
    start, end = spec.attr("start", 0), spec.attr("end", None)
    return Kernel(
        lambda x: torch.tensor(x.shape[start:end], dtype=torch.int64, device=x.device), (0,)
    )


@register("Cast")
def _cast(spec):
    dtype = ONNX_TO_TORCH.get(spec.attr("to"))
    if dtype is None:
        raise spec.fail(f"cast to ONNX type {spec.attr('to')} is not supported")
    return Kernel(lambda x: x.to(dtype), (0,))


@register("CastLike")
def _cast_like(spec):
    return Kernel(lambda x, like: x.to(like.dtype), (0, 1))


@register("Flatten")
def _flatten(spec):
    axis = spec.attr("axis", 1)
    if axis == 1:
        return Kernel(lambda x: x.reshape(x.shape[0], -1), (0,))
    return Kernel(lambda x: x.reshape(math.prod(x.shape[: axis % (x.dim() + 1)]), -1), (0,))


def reshape_target(shape: list[int], allowzero: int) -> Callable:
    """A reshape to an ONNX target shape (0 copies the input dim unless ``allowzero``)."""
    target = [int(s) for s in shape]
    copies = [] if allowzero else [i for i, s in enumerate(target) if s == 0]
    if not copies:
        target = tuple(target)
        return lambda x: x.reshape(target)

    def fn(x):
        dims = list(target)
        for i in copies:
            dims[i] = x.shape[i]
        return x.reshape(dims)

    return fn


@register("Reshape")
def _reshape(spec):
    allowzero = spec.attr("allowzero", 0)
    shape = spec.values("shape", 1)
    if shape is RUNTIME:
        return Kernel(lambda x, s: reshape_target(s.tolist(), allowzero)(x), (0, 1))
    return Kernel(reshape_target(shape, allowzero), (0,))


@register("Transpose")
def _transpose(spec):
    perm = spec.attr("perm")
    if perm is None:
        return Kernel(lambda x: x.permute(tuple(range(x.dim() - 1, -1, -1))), (0,))
    perm = tuple(perm)
    return Kernel(lambda x: x.permute(perm), (0,))


@register("Squeeze")
def _squeeze(spec):
    axes = spec.values("axes", 1)
    if axes is RUNTIME:
        return Kernel(lambda x, a: torch.squeeze(x, tuple(a.tolist())), (0, 1))
    if axes is None:
        return Kernel(torch.squeeze, (0,))
    axes = tuple(axes)
    return Kernel(lambda x: torch.squeeze(x, axes), (0,))


def _unsqueeze_fn(axes: list[int]) -> Callable:
    def fn(x):
        rank = x.dim() + len(axes)
        for axis in sorted(a % rank for a in axes):
            x = x.unsqueeze(axis)
        return x

    return fn


@register("Unsqueeze")
def _unsqueeze(spec):
    axes = spec.values("axes", 1)
    if axes is RUNTIME:
        return Kernel(lambda x, a: _unsqueeze_fn(a.tolist())(x), (0, 1))
    return Kernel(_unsqueeze_fn(list(axes)), (0,))


@register("Concat")
def _concat(spec):
    axis = spec.attr("axis")
    return Kernel(lambda *xs: torch.cat(xs, axis), present_inputs(spec))


@register("Split")
def _split(spec):
    axis, n = spec.attr("axis", 0), len(spec.outputs)
    sizes = spec.values("split", 1)
    if sizes is RUNTIME:
        return Kernel(lambda x, s: torch.split(x, s.tolist(), axis), (0, 1), n)
    if sizes is not None:
        sizes = [int(s) for s in sizes]
        return Kernel(lambda x: torch.split(x, sizes, axis), (0,), n)
    n = spec.attr("num_outputs", n)
    return Kernel(lambda x: torch.split(x, -(-x.shape[axis] // n), axis), (0,), n)


def _slice_fn(starts, ends, axes, steps) -> Callable:
    axes = list(range(len(starts))) if axes is None else list(axes)
    steps = [1] * len(starts) if steps is None else list(steps)
    spec = list(zip(axes, starts, ends, steps))

    def fn(x):
        for axis, start, end, step in spec:
            axis %= x.dim()
            if step > 0:
                x = x[(slice(None),) * axis + (slice(start, end, step),)]
            else:  # torch has no negative-step slicing: gather the indices
                size = x.shape[axis]
                start = min(max(start + size if start < 0 else start, 0), size - 1)
                end = max(end + size if end < 0 else end, -1)
                index = torch.arange(start, end, step, device=x.device)
                x = x.index_select(axis, index)
        return x

    return fn


@register("Slice")
def _slice(spec):
    if spec.opset < 10:
        attrs = (spec.attr("starts"), spec.attr("ends"), spec.attr("axes"), None)
        return Kernel(_slice_fn(*attrs), (0,))
    params = [spec.values(None, i) for i in (1, 2, 3, 4)]
    if any(p is RUNTIME for p in params):
        present = present_inputs(spec)

        def dynamic(x, *rest):
            values = dict(zip(present[1:], (r.tolist() for r in rest)))
            return _slice_fn(values[1], values[2], values.get(3), values.get(4))(x)

        return Kernel(dynamic, present)
    return Kernel(_slice_fn(*params), (0,))


@register("Gather")
def _gather(spec):
    axis = spec.attr("axis", 0)
    index = spec.const(1)
    if index is not None and index.ndim == 0:
        i = int(index)
        return Kernel(lambda x: x.select(axis, i), (0,))

    def fn(x, idx):
        ax = axis % x.dim()
        idx = torch.where(idx < 0, idx + x.shape[ax], idx)
        out = x.index_select(ax, idx.reshape(-1))
        return out.reshape(x.shape[:ax] + idx.shape + x.shape[ax + 1:])

    return Kernel(fn, (0, 1))


@register("Expand")
def _expand(spec):
    def fn(x, shape):
        return x.expand(np.broadcast_shapes(tuple(x.shape), tuple(shape.tolist())))

    return Kernel(fn, (0, 1))


@register("Tile")
def _tile(spec):
    reps = spec.values(None, 1)
    if reps is RUNTIME:
        return Kernel(lambda x, r: x.repeat(tuple(r.tolist())), (0, 1))
    reps = tuple(int(r) for r in reps)
    return Kernel(lambda x: x.repeat(reps), (0,))


@register("Range")
def _range(spec):
    def fn(start, limit, delta):
        return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype,
                            device=start.device)

    return Kernel(fn, (0, 1, 2))


from onnxprune.gates import torch_ops_nn  # noqa: E402,F401  (registers the nn ops)
from onnxprune.gates import torch_ops_more  # noqa: E402,F401  (registers the remaining ruled ops)
