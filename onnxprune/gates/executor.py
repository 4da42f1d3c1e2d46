"""TorchGraph: run an ONNX graph with torch ops, differentiably, with frozen weights.

Construction compiles the nodes once: attributes are read into closures (the op table in
``torch_ops``), nodes whose inputs are all constants are folded, and shape arithmetic
(Shape→Gather→Unsqueeze→Concat→Reshape) is evaluated symbolically by the analysis' one shape
folder (``analysis.shapefold``) so that only the dynamic batch stays a runtime value.
``forward`` then walks a flat list of (callable, input slots, output slots, slots to free) steps.
Read hooks are extra steps in front of the node they feed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import onnx
import torch
from onnx import numpy_helper
from torch import nn

from onnxprune.analysis.shapefold import (SMALL, SYMBOLIC, Dim, SymVal, reshape_target,
                                          symbolic_value)
from onnxprune.errors import OnnxPruneError
from onnxprune.gates.torch_ops import OPS, NodeSpec
from onnxprune.graph import ensure_node_names, opset_version

Hook = Callable[[torch.Tensor], torch.Tensor]
HookKey = tuple[str, int]
BATCH = "__batch__"


@dataclass
class _Plan:
    """The steps for one set of kept names (graph outputs plus captures)."""

    steps: list
    captures: list  # per step: ((slot, name), ...) produced there and asked for
    template: list = field(default_factory=list)  # env with the constants in place
    const_slots: list = field(default_factory=list)  # (slot, constant name)
    input_slots: tuple = ()
    output_slots: tuple = ()
    early: tuple = ()  # (slot, name) of captured inputs/constants


class TorchGraph(nn.Module):
    """An ONNX model as a torch module; weights are frozen buffers that move with ``.to()``.

    With ``trainable=True`` every float32 initializer of at least one dimension that a node
    reads is an ``nn.Parameter`` instead (fine-tuning): nodes reading it are not folded, so
    gradients reach it (0-d constants such as Clip bounds stay folded);
    ``trainable_weights()`` maps initializer names to those parameters.
    """

    def __init__(self, model: onnx.ModelProto, read_hooks: dict[HookKey, Hook] | None = None,
                 trainable: bool = False):
        super().__init__()
        names = [n.name for n in model.graph.node]
        if not all(names) or len(set(names)) < len(names):
            model = _copy(model)
            ensure_node_names(model)
        graph = model.graph
        self._opset = opset_version(model)
        self._nodes = list(graph.node)
        for node in self._nodes:
            if node.domain not in ("", "ai.onnx") or node.op_type not in OPS:
                raise OnnxPruneError(f"node '{node.name}': op type '{node.op_type}' is not "
                                     f"supported by the torch executor")
        inits = {t.name for t in graph.initializer}
        self.input_names = [i.name for i in graph.input if i.name not in inits]
        self.output_names = [o.name for o in graph.output]
        self._node_inputs = {n.name: list(n.input) for n in self._nodes}
        self._consumed = {name for n in self._nodes for name in n.input} | set(self.output_names)
        self._known = inits | set(self.input_names) | {o for n in self._nodes for o in n.output}
        self._dims = _infer_dims(model)
        self._base_names: dict[str, str] = {}
        self._param_names: dict[str, str] = {}
        read = {name for n in self._nodes for name in n.input}
        for index, init in enumerate(graph.initializer):
            value = _to_torch(init)
            if trainable and value.dtype == torch.float32 and value.ndim > 0 and init.name in read:
                self.register_parameter(f"_p{index}", nn.Parameter(value))
                self._param_names[init.name] = f"_p{index}"
                continue
            self.register_buffer(f"_c{index}", value, persistent=False)
            self._base_names[init.name] = f"_c{index}"
        self._folded_names: dict[str, str] = {}
        self.set_read_hooks(read_hooks or {})

    # ---- hooks and compilation ------------------------------------------------------------
    def set_read_hooks(self, hooks: dict[HookKey, Hook]) -> None:
        """Replace the read hooks: ``hooks[(node name, input index)](tensor)`` feeds that input."""
        for name, index in hooks:
            inputs = self._node_inputs.get(name)
            if inputs is None:
                raise OnnxPruneError(f"read hook for unknown node '{name}'")
            if not 0 <= index < len(inputs) or not inputs[index]:
                raise OnnxPruneError(f"read hook for node '{name}': no input {index}")
        self._hooks = dict(hooks)
        self._build()

    def _build(self) -> None:
        """Fold constants and shape arithmetic; keep the rest as runtime nodes."""
        for attr in self._folded_names.values():
            delattr(self, attr)
        consts = {name: self._buffers[attr] for name, attr in self._base_names.items()}
        sym: dict[str, SymVal] = {}
        self._runtime: list[tuple[Callable, list[str], list[str]]] = []
        hooks_of: dict[str, dict[int, Hook]] = {}
        for (name, index), hook in self._hooks.items():
            hooks_of.setdefault(name, {})[index] = hook
        with torch.no_grad():
            for node in self._nodes:
                self._compile_node(node, hooks_of.get(node.name, {}), consts, sym)
        self._folded_names = {}
        device = next((b.device for b in self.buffers()), None)
        for index, name in enumerate(n for n in consts if n not in self._base_names):
            self.register_buffer(f"_f{index}", consts[name].to(device), persistent=False)
            self._folded_names[name] = f"_f{index}"
        self._plans: dict[frozenset, _Plan] = {}

    def _compile_node(self, node, hooks: dict[int, Hook], consts, sym) -> None:
        inputs = list(node.input)
        for index, hook in hooks.items():
            renamed = f"{inputs[index]}::hook::{node.name}:{index}"
            self._runtime.append((hook, [inputs[index]], [renamed]))
            inputs[index] = renamed
        known = {i: consts[n] for i, n in enumerate(inputs) if n in consts}
        spec = NodeSpec(node, self._opset, known)
        spec.inputs = inputs
        rewrite = _REWRITES.get(node.op_type)
        if rewrite is not None:
            rewrite(spec, sym, self._dims, consts)
        if node.op_type in SYMBOLIC:
            value = symbolic_value(node.op_type, spec, [_sym_of(n, consts, sym) for n in inputs],
                                   self._dims)
            if value is not None and all(isinstance(e, int) for e in value[0]):
                consts[node.output[0]] = _sym_tensor(value, spec, consts)
                return
            if value is not None:
                sym[node.output[0]] = value
        kernel = OPS[node.op_type](spec)
        for extra in node.output[kernel.n_out:]:
            if extra and extra in self._consumed:
                raise spec.fail(f"output '{extra}' is not supported (only the first is computed)")
        outputs = list(node.output[: kernel.n_out])
        if all(i in spec.consts for i in kernel.args):
            result = kernel.fn(*[spec.consts[i] for i in kernel.args])
            for name, value in zip(outputs, result if kernel.n_out > 1 else (result,)):
                consts[name] = value
            return
        self._runtime.append((kernel.fn, [inputs[i] for i in kernel.args], outputs))

    def _constant(self, name: str) -> torch.Tensor:
        if name in self._param_names:
            return self._parameters[self._param_names[name]]
        attr = self._folded_names.get(name) or self._base_names[name]
        return self._buffers[attr]

    def _is_const(self, name: str) -> bool:
        return name in self._folded_names or name in self._base_names or name in self._param_names

    def trainable_weights(self) -> dict[str, nn.Parameter]:
        """Initializer name -> its parameter (``trainable=True``), in graph order."""
        return {name: self._parameters[attr] for name, attr in self._param_names.items()}

    def _plan(self, keep: frozenset) -> _Plan:
        plan = self._plans.get(keep)
        if plan is None:
            plan = self._plans[keep] = self._make_plan(keep)
        return plan

    def _make_plan(self, keep: frozenset) -> _Plan:
        """Dead-code elimination, slot numbering and last-use frees for ``keep``."""
        needed, live = set(keep), []
        for fn, ins, outs in reversed(self._runtime):
            if needed.intersection(outs):
                live.append((fn, ins, outs))
                needed.update(ins)
        live.reverse()
        slots: dict[str, int] = {}
        for name in [*self.input_names, *sorted(n for n in needed if self._is_const(n))]:
            slots.setdefault(name, len(slots))
        for _, _, outs in live:
            for name in outs:
                slots.setdefault(name, len(slots))
        last: dict[str, int] = {}
        for step, (_, ins, outs) in enumerate(live):
            for name in (*outs, *ins):
                last[name] = step
        frees: list[list[int]] = [[] for _ in live]
        for name, step in last.items():
            if name not in keep and not self._is_const(name):
                frees[step].append(slots[name])
        steps, captures = [], []
        for (fn, ins, outs), free in zip(live, frees):
            out = slots[outs[0]] if len(outs) == 1 else tuple(slots[o] for o in outs)
            steps.append((fn, tuple(slots[i] for i in ins), out, tuple(free)))
            captures.append(tuple((slots[o], o) for o in outs if o in keep))
        plan = _Plan(steps, captures)
        plan.const_slots = [(slots[n], n) for n in slots if self._is_const(n)]
        plan.input_slots = tuple(slots[n] for n in self.input_names)
        plan.early = tuple((slots[n], n) for n in keep
                           if n in slots and (n in self.input_names or self._is_const(n)))
        self._fill_template(plan, len(slots))
        for name in self.output_names:
            if name not in slots:
                raise OnnxPruneError(f"graph output '{name}' is produced by no node")
        plan.output_slots = tuple(slots[n] for n in self.output_names)
        return plan

    def _fill_template(self, plan: _Plan, size: int | None = None) -> None:
        plan.template = [None] * (len(plan.template) if size is None else size)
        for slot, name in plan.const_slots:
            plan.template[slot] = self._constant(name)

    def _apply(self, fn, *args, **kwargs):
        result = super()._apply(fn, *args, **kwargs)
        for plan in getattr(self, "_plans", {}).values():
            self._fill_template(plan)
        return result

    # ---- running ----------------------------------------------------------------------------
    def _start(self, plan: _Plan, inputs) -> list:
        if len(inputs) != len(plan.input_slots):
            raise OnnxPruneError(
                f"the graph takes {len(plan.input_slots)} inputs, got {len(inputs)}")
        env = plan.template.copy()
        for slot, value in zip(plan.input_slots, inputs):
            env[slot] = value
        return env

    @staticmethod
    def _finish(plan: _Plan, env: list):
        outs = tuple(env[s] for s in plan.output_slots)
        return outs[0] if len(outs) == 1 else outs

    def forward(self, *inputs: torch.Tensor):
        """Run the graph; one tensor for one graph output, else a tuple."""
        plan = self._plan(frozenset(self.output_names))
        env = self._start(plan, inputs)
        for step in plan.steps:
            _run_step(env, *step)
        return self._finish(plan, env)

    def forward_with(self, inputs, capture: Iterable[str]):
        """Run the graph; also return the named intermediate tensors: (outputs, {name: tensor})."""
        capture = set(capture)
        unknown = sorted(capture - self._known)
        if unknown:
            raise OnnxPruneError(f"cannot capture unknown tensor '{unknown[0]}'")
        inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
        plan = self._plan(frozenset(capture | set(self.output_names)))
        env = self._start(plan, inputs)
        got = {name: env[slot] for slot, name in plan.early if name in capture}
        for (fn, ins, out, free), caught in zip(plan.steps, plan.captures):
            _run_step(env, fn, ins, out, ())
            for slot, name in caught:
                got[name] = env[slot]
            for slot in free:
                env[slot] = None
        for name in capture - set(got):  # folded to a constant
            if not self._is_const(name):
                raise OnnxPruneError(f"tensor '{name}' is never computed by the executor")
            got[name] = self._constant(name)
        return self._finish(plan, env), {name: got[name] for name in capture}


# ---- helpers ----------------------------------------------------------------------------------
def _run_step(env: list, fn, ins, out, free) -> None:
    """One compiled node: read its slots, write its output slot(s), free dead slots."""
    value = fn(*[env[i] for i in ins])
    if out.__class__ is int:
        env[out] = value
    else:
        for slot, item in zip(out, value):
            env[slot] = item
    for slot in free:
        env[slot] = None


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _to_torch(tensor: onnx.TensorProto) -> torch.Tensor:
    array = numpy_helper.to_array(tensor)
    try:
        return torch.from_numpy(array.copy())
    except TypeError:
        raise OnnxPruneError(
            f"initializer '{tensor.name}' has unsupported type {array.dtype}") from None


def _infer_dims(model: onnx.ModelProto) -> dict[str, list[Dim]]:
    """Every tensor's dims from ONNX shape inference, with each input's axis 0 symbolic."""
    copy = _copy(model)
    inits = {t.name for t in copy.graph.initializer}
    for value in copy.graph.input:
        shape = value.type.tensor_type.shape
        if value.name in inits or not shape.dim:
            continue
        label = shape.dim[0].dim_param or BATCH
        shape.dim[0].Clear()
        shape.dim[0].dim_param = label
    del copy.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(copy, strict_mode=False, data_prop=True)
    except Exception:  # shape folding is an optimisation; without it shapes run at runtime
        return {}
    dims: dict[str, list[Dim]] = {}
    for value in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        tensor_type = value.type.tensor_type
        if value.type.HasField("tensor_type") and tensor_type.HasField("shape"):
            dims[value.name] = [
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in tensor_type.shape.dim
            ]
    return dims


def _sym_of(name: str, consts, sym) -> SymVal | None:
    if name in sym:
        return sym[name]
    tensor = consts.get(name)
    if tensor is None or tensor.dim() > 1 or tensor.numel() > SMALL:
        return None
    if tensor.dtype not in (torch.int64, torch.int32):
        return None
    return tuple(int(v) for v in tensor.reshape(-1).tolist()), tensor.dim() == 0


def _sym_tensor(value: SymVal, spec: NodeSpec, consts) -> torch.Tensor:
    entries, scalar = value
    device = next(iter(consts.values())).device if consts else None
    tensor = torch.tensor(entries, dtype=torch.int64, device=device)
    to_int32 = spec.op_type == "Cast" and spec.attr("to") == onnx.TensorProto.INT32
    dtype = torch.int32 if to_int32 else None
    tensor = tensor.reshape(()) if scalar else tensor
    return tensor if dtype is None else tensor.to(dtype)


def _rewrite_reshape(spec: NodeSpec, sym, dims, consts) -> None:
    """A target with symbolic entries becomes constant (``analysis.shapefold.reshape_target``)."""
    value = sym.get(spec.inputs[1]) if len(spec.inputs) > 1 and 1 not in spec.consts else None
    if value is None or spec.attr("allowzero", 0):
        return
    target = reshape_target(value, dims.get(spec.inputs[0]) or [])
    if target is not None:
        spec.consts[1] = torch.tensor(target, dtype=torch.int64)


_REWRITES = {"Reshape": _rewrite_reshape}
