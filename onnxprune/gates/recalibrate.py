"""Recalibration after selection, folded into the weights (the graph does not grow).

Exported graphs have BatchNorm folded into the convs, so pruning shifts what every later layer
sees and nothing re-normalizes it. Layers are corrected one at a time, in topological order, each
on the pruned graph's activations *after* the corrections upstream of it (so errors do not
accumulate), against the original model's activations on the same calibration inputs.

**One sweep** (as layer-wise post-training methods like GPTQ process a network): both graphs
are compiled once and run step by step, each step over every calibration batch (``Sweep``).
When the pruned graph's sweep reaches a layer, the layer is fitted on the inputs the corrected
layers upstream produced, its new weights go into its step, and its corrected output is fed
forward: about one forward pass of each graph plus the solves. Only tensors still to be read
stay cached, on the device within ``memory_budget`` (``gates/memory.py``), spilled to a
temporary folder past it; a fit builds its im2col rows in chunks of samples within the budget. A residual Add's other input is taken with the weights of that moment (later layers not
yet fitted), so the result equals the earlier per-layer implementation's (which reran the
whole pruned graph for every layer; ``tests/gates/recalibrate_reference.py``).

* ``"reconstruct"`` (default; least-squares reconstruction, as in channel pruning by
  Luo et al. 2017 / He et al. 2017). For a 2-D Conv (any ``group``: one problem per group, so
  a depthwise conv gets one per channel) or a Gemm with constant weights, solve for the weights
  and bias of its kept output channels that best reproduce the original layer's output from
  the pruned layer's actual input: ``min_W ||X_p W − Y_o||² + ρ ||W − W₀||²`` (ρ relative to
  the mean diagonal of XᵀX, pulling towards the sliced original weights W₀). The
  pre-activation is matched, so it works for any activation that follows. A layer whose only
  reader is a residual ``Add`` is fitted so that the *sum* matches the original (target =
  original Add output − the pruned graph's other Add input), which also absorbs the error
  carried by the residual stream. Layers whose input is unchanged are left alone; at most
  ``_MAX_ROWS`` random im2col rows per calibration batch enter the normal equations XᵀX, XᵀY,
  accumulated batch by batch, one set per fold (alternate batches).

  ρ is chosen per layer from ``RIDGE_GRID`` by two-fold cross-validation (``choose_ridge``),
  from the two folds' normal equations alone. A fixed small ρ let the Gemm layers memorise the
  calibration images (one row per image: 512 rows for VGG's 576-input Gemm); cross-validation
  picks ρ 0.1–10 there and 1e-4–1e-3 for the convs (VGG, target 0.25, seed 0, held-out MNIST:
  AutoBot 97.0 → 98.0%, random 98.0 → 98.4%; see benchmarks/autobot.json).
* ``"stats"`` (adaptive-BN / EagleEye style, for convs and Gemms; also the fallback for convs the
  reconstruction does not handle: auto_pad, not 2-D): rescale each kept output channel so that
  its per-channel mean and std match the original's: ``y' = (y - μ_p) · σ_o/σ_p + μ_o``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Mapping

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from onnxprune.gates.config import RECALIBRATION_MODES
from onnxprune.gates.device import device_budget, resolve_device
from onnxprune.gates.executor import TorchGraph
from onnxprune.gates.memory import RECALIBRATION_CACHE
from onnxprune.gates.sweep import Cache, Inputs, Sweep
from onnxprune.gates.torch_ops import OPS, NodeSpec
from onnxprune.graph import opset_version

_EPS = 1e-6
RIDGE = 1e-3  # ρ as a fraction of mean(diag(XᵀX)) when cross-validation is impossible
RIDGE_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # ρ candidates, chosen per layer by 2-fold CV
_MAX_ROWS = 8192  # im2col rows per calibration batch that enter the normal equations
Progress = Callable[[int, int, str], None]  # (layers done, layers in all, layer name)


def _channel_stats(tensors) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (axis 1) mean and std over an iterable of batches (float64)."""
    sums = squares = 0.0
    count = 0
    for got in tensors:
        t = got.double().transpose(0, 1).reshape(got.shape[1], -1)
        sums = sums + t.sum(1)
        squares = squares + (t * t).sum(1)
        count += t.shape[1]
    mean = sums / count
    var = (squares / count - mean * mean).clamp_min(0.0)
    return mean.cpu().numpy(), var.sqrt().cpu().numpy()


def _layers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Convs and Gemms whose weight (and bias) are initializers used by that node only."""
    inits = {t.name for t in model.graph.initializer}
    users: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    return [n for n in model.graph.node
            if n.op_type in ("Conv", "Gemm") and len(n.input) > 1 and n.input[1] in inits
            and users[n.input[1]] == 1 and (len(n.input) < 3 or not n.input[2]
                                           or (n.input[2] in inits and users[n.input[2]] == 1))]


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _reconstructable(node: onnx.NodeProto, weight: np.ndarray) -> bool:
    a = _attrs(node)
    if node.op_type == "Gemm":
        return (weight.ndim == 2 and not a.get("transA", 0)
                and float(a.get("alpha", 1.0)) == 1.0 and float(a.get("beta", 1.0)) == 1.0)
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    # grouped and depthwise convs too: one least-squares problem per group
    return weight.ndim == 4 and auto in ("NOTSET", "VALID")


def _columns(node: onnx.NodeProto, x: torch.Tensor, weight_shape,
             rows: torch.Tensor | None = None) -> torch.Tensor:
    """The layer's input as rows of a linear map: [groups, rows, fan-in] (float64); only the
    im2col ``rows`` (sample × output position) when given, gathered without unfolding all."""
    if node.op_type == "Gemm":
        x = x.reshape(x.shape[0], -1)
        return (x if rows is None else x[rows.to(x.device)]).double()[None]
    from onnxprune.gates.im2col import conv_rows, output_size

    a = _attrs(node)
    kernel = tuple(weight_shape[2:])
    if rows is None:
        oh, ow = output_size(x, kernel, a)
        rows = torch.arange(x.shape[0] * oh * ow)
    cols = conv_rows(x, kernel, a, rows).double()  # [R, C·kh·kw]
    group = int(a.get("group", 1))
    return cols.view(len(cols), group, -1).permute(1, 0, 2)


def _targets(node: onnx.NodeProto, y: torch.Tensor, group: int,
             rows: torch.Tensor | None = None) -> torch.Tensor:
    """The original output as [groups, rows, outputs per group] (float64), only ``rows``
    (sample × output position) when given."""
    if node.op_type == "Gemm":
        return (y if rows is None else y[rows.to(y.device)]).double()[None]
    n, c = y.shape[:2]
    flat = y.reshape(n, c, -1).permute(0, 2, 1).reshape(-1, c)  # [N·positions, C]
    if rows is not None:
        flat = flat[rows.to(y.device)]
    return flat.double().view(len(flat), group, c // group).permute(1, 0, 2)


def _residual_adds(model: onnx.ModelProto) -> dict[str, tuple[str, str]]:
    """layer output -> (Add output, the Add's other input) where the Add is its only reader."""
    inits = {t.name for t in model.graph.initializer}
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    found = {}
    for name, nodes in readers.items():
        if len(nodes) == 1 and nodes[0].op_type == "Add" and len(nodes[0].input) == 2:
            add = nodes[0]
            other = add.input[1] if add.input[0] == name else add.input[0]
            if other != name and other not in inits:
                found[name] = (add.output[0], other)
    return found


class _Normal:
    """Normal equations of a least-squares fit over some calibration rows (per group)."""

    def __init__(self):
        self.gram = self.rhs = None
        self.energy = 0.0  # Σ target², for the held-out error

    def add(self, cols: torch.Tensor, target: torch.Tensor) -> None:
        g, r = cols.transpose(1, 2) @ cols, cols.transpose(1, 2) @ target
        self.gram = g if self.gram is None else self.gram + g
        self.rhs = r if self.rhs is None else self.rhs + r
        self.energy += float((target * target).sum())

    def merged(self, other: "_Normal") -> "_Normal":
        both = _Normal()
        both.gram, both.rhs = self.gram + other.gram, self.rhs + other.rhs
        both.energy = self.energy + other.energy
        return both

    def solve(self, prior: torch.Tensor, ridge: float) -> torch.Tensor:
        """argmin ||XW − Y||² + ρ||W − prior||², ρ = ridge × mean(diag(XᵀX)): [G, fan+1, per]."""
        rho = ridge * torch.diagonal(self.gram, dim1=1, dim2=2).mean(1).clamp_min(_EPS)
        eye = torch.eye(self.gram.shape[1], dtype=torch.float64, device=self.gram.device)
        system = self.gram + rho[:, None, None] * eye
        rhs = self.rhs + rho[:, None, None] * prior
        factor, info = torch.linalg.cholesky_ex(system)  # SPD: half an LU's cost
        if bool((info == 0).all()):
            return torch.cholesky_solve(rhs, factor)
        return torch.linalg.solve(system, rhs)

    def error(self, w: torch.Tensor) -> float:
        """||XW − Y||² over these rows, from the normal equations alone."""
        quad = (w.transpose(1, 2) @ self.gram @ w).diagonal(dim1=1, dim2=2).sum()
        return float(quad - 2.0 * (w * self.rhs).sum() + self.energy)


def choose_ridge(folds: tuple[_Normal, _Normal], prior: torch.Tensor) -> float:
    """The ridge of ``RIDGE_GRID`` with the lowest two-fold cross-validated error.

    Fitting on one half of the calibration images and scoring on the other catches the
    layers where the fit would memorise its calibration set: a Gemm has one row per image,
    so 512 images barely determine a 576-input layer.
    """
    a, b = folds
    if a.gram is None or b.gram is None:
        return RIDGE
    errors = []
    for ridge in RIDGE_GRID:
        try:
            errors.append(b.error(a.solve(prior, ridge)) + a.error(b.solve(prior, ridge)))
        except RuntimeError:  # singular at this ridge
            errors.append(float("inf"))
    finite = [e for e in errors if np.isfinite(e)]
    return RIDGE_GRID[errors.index(min(finite))] if finite else RIDGE


def _input_changed(node, sweep: Sweep, reference: Sweep) -> bool:
    """Whether the layer's input in the pruned graph differs from the original's anywhere."""
    for b in range(sweep.batches):
        got, want = sweep.value(node.input[0], b), reference.value(node.input[0], b)
        if got.shape != want.shape or not torch.allclose(got, want, atol=1e-6):
            return True
    return False


def _sample_bytes(node, x: torch.Tensor, y: torch.Tensor, w0_shape) -> int:
    """float64 bytes of one calibration sample's columns, padded input and targets in a fit."""
    positions = int(np.prod(y.shape[2:])) if y.ndim > 2 else 1
    fan = int(np.prod(w0_shape[1:])) * (int(_attrs(node).get("group", 1))
                                        if node.op_type == "Conv" else 1)
    padded = 2 * int(np.prod(x.shape[1:])) if node.op_type == "Conv" else 0
    return 8 * (positions * (2 * fan + 2 * int(y.shape[1])) + padded)


def _fit_rows(node, sweep: Sweep, reference: Sweep, out_index: np.ndarray, w0_shape,
              group: int, residual: tuple[str, str] | None,
              work: int | None = None) -> tuple[_Normal, _Normal]:
    """Normal equations over the calibration batches, in two folds (alternate batches).

    Of each batch, at most ``_MAX_ROWS`` random rows enter (the same rows as the per-layer
    reference drew); the columns and targets are built for chunks of samples whose float64
    working arrays fit in ``work`` bytes (at least one sample), so a fit's memory does not grow
    with the batch or the image size.
    """
    folds = (_Normal(), _Normal())
    generator = torch.Generator().manual_seed(0)
    index = torch.as_tensor(out_index, device=sweep.device)
    for b in range(sweep.batches):
        x = sweep.value(node.input[0], b)
        if residual:  # the other Add input with the weights of now (later layers unfitted)
            y = reference.value(residual[0], b)[:, index] - sweep.peek(residual[1], b)
        else:
            y = reference.value(node.output[0], b)[:, index]
        positions = int(np.prod(y.shape[2:])) if y.ndim > 2 else 1
        total = x.shape[0] * positions
        rows = (torch.randperm(total, generator=generator)[:_MAX_ROWS].to(x.device)
                if total > _MAX_ROWS else None)  # a random subset of the positions suffices
        chunk = x.shape[0] if work is None else max(
            1, int(work) // max(1, _sample_bytes(node, x, y, w0_shape)))
        for start in range(0, x.shape[0], chunk):
            stop = min(start + chunk, x.shape[0])
            local = None
            if rows is not None:
                local = rows[(rows >= start * positions) & (rows < stop * positions)]
                if not len(local):
                    continue
                local = local - start * positions
            cols = _columns(node, x[start:stop], w0_shape, local)
            target = _targets(node, y[start:stop], group, local)
            ones = torch.ones(*cols.shape[:2], 1, dtype=cols.dtype, device=cols.device)
            folds[b % 2].add(torch.cat([cols, ones], 2), target)
            del cols, target, ones
    return folds


def _reconstruct(node, sweep: Sweep, reference: Sweep, out_index: np.ndarray,
                 weight: np.ndarray, bias: np.ndarray, residual: tuple[str, str] | None = None,
                 work: int | None = None):
    """Least-squares weights/bias for ``node`` and how they were found (with the ridge); None
    when its input equals the original's.

    With ``residual`` = (Add output, other Add input), the layer is fitted so that the *sum*
    matches the original's: target = original Add output − the pruned graph's other input.
    """
    if not _input_changed(node, sweep, reference):
        return None
    a = _attrs(node)
    trans_b = node.op_type == "Gemm" and int(a.get("transB", 0))
    w0 = weight.T if (node.op_type == "Gemm" and not trans_b) else weight  # [out, fan-in...]
    group = int(a.get("group", 1)) if node.op_type == "Conv" else 1
    per = w0.shape[0] // group
    folds = _fit_rows(node, sweep, reference, out_index, w0.shape, group, residual, work)
    device = sweep.device
    flat = torch.as_tensor(w0.reshape(group, per, -1), dtype=torch.float64, device=device)
    prior = torch.cat([flat, torch.as_tensor(bias, dtype=torch.float64, device=device)
                       .view(group, per, 1)], 2).transpose(1, 2)  # [G, fan+1, per]
    ridge = choose_ridge(folds, prior)
    whole = folds[0] if folds[1].gram is None else folds[0].merged(folds[1])
    solved = whole.solve(prior, ridge).transpose(1, 2).cpu()  # [G, per, fan+1]
    if not torch.isfinite(solved).all():
        return None
    new_w = solved[..., :-1].reshape(w0.shape).numpy()
    new_b = solved[..., -1].reshape(-1).numpy()
    if node.op_type == "Gemm" and not trans_b:
        new_w = new_w.T
    return new_w, new_b, {"how": "reconstruct", "ridge": ridge}


def _set_bias(model, inits, node, name, values, dtype) -> None:
    if len(node.input) > 2 and node.input[2]:
        inits[node.input[2]].CopyFrom(numpy_helper.from_array(values.astype(dtype), node.input[2]))
        return
    bias_name = f"{name}__recalibrated_bias"
    model.graph.initializer.append(numpy_helper.from_array(values.astype(dtype), bias_name))
    while len(node.input) < 3:
        node.input.append("")
    node.input[2] = bias_name
    inits[bias_name] = model.graph.initializer[-1]


def _out_axis(node: onnx.NodeProto) -> int:
    """The weight axis of the output channels: 0 for Conv and Gemm(transB=1), else 1."""
    if node.op_type == "Gemm" and not int(_attrs(node).get("transB", 0)):
        return 1
    return 0


def _layer_params(node, inits, kept):
    """(weight, bias, dtype, original indices of its output channels) as float64, or None
    when the layer's shapes do not line up with ``kept``."""
    weight = numpy_helper.to_array(inits[node.input[1]])
    dtype = weight.dtype
    weight = weight.astype(np.float64)
    channels = weight.shape[_out_axis(node)]
    name = node.output[0]
    index = np.asarray(kept[name]) if name in kept else np.arange(channels)
    if len(index) != channels:
        return None
    has_bias = len(node.input) > 2 and bool(node.input[2])
    bias = (numpy_helper.to_array(inits[node.input[2]]).astype(np.float64).reshape(-1)
            if has_bias else np.zeros(channels))
    if bias.shape != (channels,):
        return None
    return weight, bias, dtype, index


def _match_stats(node, sweep: Sweep, reference: Sweep, index, weight, bias):
    """Weights/bias rescaling each output channel to the original's mean/std, and how; None
    when already matching."""
    name = node.output[0]
    mean_p, std_p = _channel_stats(sweep.peek(name, b) for b in range(sweep.batches))
    mean_o, std_o = (s[index] for s in _channel_stats(reference.value(name, b)
                                                      for b in range(reference.batches)))
    ratio = np.where(std_p > _EPS, std_o / np.maximum(std_p, _EPS), 1.0)
    if np.allclose(ratio, 1.0, atol=1e-4) and np.allclose(mean_p, mean_o, atol=1e-5):
        return None
    shape = [1] * weight.ndim
    shape[_out_axis(node)] = -1
    return weight * ratio.reshape(shape), (bias - mean_p) * ratio + mean_o, {"how": "stats"}


def _jobs(layers, inits, kept, mode, adds, frozen=()) -> list[tuple]:
    """(node, params, kind, residual, names read in the pruned graph, in the original) for each
    layer to correct, in topological order; kind is "reconstruct" or "stats"."""
    jobs = []
    for node in layers:
        params = None if node.name in frozen else _layer_params(node, inits, kept)
        if params is None:
            continue
        if mode == "reconstruct" and _reconstructable(node, params[0]):
            residual = adds.get(node.output[0])
            mine = {node.input[0]} | ({residual[1]} if residual else set())
            theirs = {node.input[0], residual[0] if residual else node.output[0]}
            jobs.append((node, params, "reconstruct", residual, mine, theirs))
        elif node.op_type == "Conv" or _reconstructable(node, params[0]):  # plain Gemm too
            names = {node.output[0]}
            jobs.append((node, params, "stats", None, names, names))
    return jobs


def _apply(model, inits, node, sweep: Sweep, opset: int, result, dtype) -> None:
    """Write the corrected weights into ``model`` and into the sweep's step for ``node``."""
    new_weight, new_bias, _ = result
    inits[node.input[1]].CopyFrom(numpy_helper.from_array(new_weight.astype(dtype),
                                                          node.input[1]))
    _set_bias(model, inits, node, node.output[0], new_bias, dtype)
    step = sweep.producer.get(node.output[0])
    if step is None:
        return
    # as the executor would see them: stored in the model's dtype, computed in float32
    weight, bias = (torch.from_numpy(numpy_helper.to_array(inits[n]).copy()).float()
                    .to(sweep.device) for n in node.input[1:3])
    spec = NodeSpec(node, opset, {1: weight, 2: bias})
    kernel = OPS[node.op_type](spec)
    sweep.replace(step, kernel.fn, [spec.inputs[i] for i in kernel.args],
                  {node.input[1]: weight, node.input[2]: bias})


def recalibrate(original: onnx.ModelProto, pruned: onnx.ModelProto, x,
                kept: Mapping[str, np.ndarray], batch: int = 256, mode: str = "reconstruct",
                *, device: str = "cpu", batch_size: int = 64,
                memory_budget: int | str | None = None, indices=None,
                progress: Progress | None = None,
                frozen: Collection[str] = ()) -> tuple[onnx.ModelProto, list[dict]]:
    """Return ``pruned`` with layer weights/biases corrected, and one record per changed layer
    (``layer``, ``how``: reconstruct/stats, ``ridge`` for a reconstruction).

    ``kept[tensor]`` lists, for a conv output tensor of the pruned graph, the original channel
    index of each of its channels (a layer output not listed keeps all its channels).
    ``mode`` is ``"reconstruct"`` (least squares, stats as fallback) or ``"stats"``.
    One sweep over both graphs in topological order (see the module docstring), streaming
    the calibration samples ``x[indices]`` (all of ``x`` without ``indices``; ``x`` may be a
    lazy array-like, indexed one batch at a time by an int array) in batches of
    ``min(batch, batch_size)`` (``batch`` is the older name, kept for callers; the two folds of
    the cross-validation are alternate batches) on ``device`` (auto|cpu|cuda|cuda:N).
    ``memory_budget`` (bytes, or a size such as ``"2G"``; default
    :func:`~onnxprune.gates.memory.default_memory_budget`, on CUDA a quarter of the GPU's
    memory) bounds the cached activations
    (``RECALIBRATION_CACHE`` of it, the rest spilled to a temporary folder that is removed
    afterwards) and a fit's working arrays (the remainder); see ``gates/memory.py``.
    ``progress(done, total, layer name)`` is called after each layer it considers. Layers
    (node names) in ``frozen`` keep their weights bit for bit (e.g. ``--exclude``).
    """
    if mode not in RECALIBRATION_MODES:
        raise ValueError(f"unknown recalibration mode {mode!r}")
    device = resolve_device(device)
    budget = device_budget(memory_budget, device)
    model = onnx.ModelProto()
    model.CopyFrom(pruned)
    inits = {t.name: t for t in model.graph.initializer}
    jobs = _jobs(_layers(model), inits, kept, mode, _residual_adds(model), set(frozen))
    if not jobs or len(x) == 0 or (indices is not None and len(indices) == 0):
        return model, []
    batch = max(1, min(int(batch), int(batch_size)))
    cache = Cache(int(budget * RECALIBRATION_CACHE), device)
    work = max(1, budget - cache.budget)
    try:
        with torch.no_grad():
            inputs = Inputs(x, batch, cache, indices)
            sweep = Sweep(TorchGraph(model).float().to(device), inputs, cache,
                          Counter(n for job in jobs for n in job[4]))
            reference = Sweep(TorchGraph(original).float().to(device), inputs, cache,
                              Counter(n for job in jobs for n in job[5]))
            records = _sweep_layers(model, inits, jobs, sweep, reference, progress, work)
    finally:
        cache.close()
    return model, records


def _sweep_layers(model, inits, jobs, sweep: Sweep, reference: Sweep,
                  progress: Progress | None, work: int | None = None) -> list[dict]:
    records, opset = [], opset_version(model)
    for done, (node, params, kind, residual, mine, theirs) in enumerate(jobs, 1):
        weight, bias, dtype, index = params
        step = sweep.producer.get(node.output[0])
        if step is not None:  # None: folded to a constant by the executor, nothing to fit
            sweep.advance_to(step)  # its input is ready; the other Add input is peeked
            reference.advance(theirs)
            if kind == "reconstruct":
                result = _reconstruct(node, sweep, reference, index, weight, bias, residual,
                                      work)
            else:
                result = _match_stats(node, sweep, reference, index, weight, bias)
            if result is not None:
                _apply(model, inits, node, sweep, opset, result, dtype)
                records.append({"layer": node.name, **result[2]})
        sweep.release(mine)
        reference.release(theirs)
        if progress is not None:
            progress(done, len(jobs), node.name)
    return records
