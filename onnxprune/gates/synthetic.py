"""Data-free inputs: match BatchNormalization running statistics (ZeroQ / DeepInversion style).

Where the graph keeps BatchNormalization nodes, inputs are optimised, one batch at a time, so
that the per-channel mean and variance each BN sees over the batch match its running statistics.
Exporters usually fold BatchNorm into the convs (both PyTorch exporters do, and so do the
reference models): then no running statistics are left in the graph and none are matched; the
inputs are standard Gaussian noise in the model's (preprocessed) input space, which matches only
the zero mean and unit variance per input channel that mean/std normalisation gives real data.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from onnxprune.gates.device import device_budget, resolve_device
from onnxprune.gates.executor import TorchGraph

SAMPLES = 512  # synthetic inputs in all
BATCH_SIZE = 32  # inputs optimised together: memory grows with this, not with SAMPLES
STEPS = 200  # Adam steps per batch
NOISE = ("gaussian noise N(0, 1) in the preprocessed input space: the graph has no "
         "BatchNormalization statistics (folded into the convs by the exporter), so no internal "
         "statistics are matched, only the zero mean and unit variance of normalised inputs")


def has_bn_statistics(model: onnx.ModelProto) -> bool:
    """Whether the graph keeps BatchNormalization running statistics to match."""
    return bool(_bn_targets(model))


def _bn_targets(model: onnx.ModelProto):
    inits = {t.name: t for t in model.graph.initializer}
    targets = []
    for node in model.graph.node:
        if node.op_type == "BatchNormalization" and all(n in inits for n in node.input[3:5]):
            mean = numpy_helper.to_array(inits[node.input[3]])
            var = numpy_helper.to_array(inits[node.input[4]])
            targets.append((node.input[0], torch.from_numpy(mean.copy()),
                            torch.from_numpy(var.copy())))
    return targets


def _bn_loss(got: dict, targets) -> torch.Tensor:
    loss = 0.0
    for name, mean, var in targets:
        t = got[name].transpose(0, 1).reshape(got[name].shape[1], -1)
        loss = loss + (t.mean(1) - mean).norm() + (t.var(1, unbiased=t.shape[1] > 1) - var).norm()
    return loss


def _saved_bytes(graph: TorchGraph, shape, names, targets, size: int, device: str) -> int:
    """Bytes autograd keeps for one optimisation step at batch ``size``."""
    saved = [0]

    def pack(tensor):
        saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    probe = torch.zeros((size, *shape), device=device, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        _bn_loss(graph.forward_with(probe, names)[1], targets)
    return saved[0]


def fitting_batch(graph: TorchGraph, shape, names, targets, batch_size: int, budget: int,
                  device: str) -> int:
    """The largest batch up to ``batch_size`` whose step keeps at most ``budget`` bytes for
    autograd (at least 1), from two probes: the bytes at batch 2 minus those at batch 1 are one
    sample's, the rest (weights saved by their ops) do not grow with the batch."""
    if batch_size <= 1:
        return 1
    one = _saved_bytes(graph, shape, names, targets, 1, device)
    per_sample = max(1, _saved_bytes(graph, shape, names, targets, 2, device) - one)
    return int(max(1, min(batch_size, (budget - (one - per_sample)) // per_sample)))


def synthesize(model: onnx.ModelProto, shape: tuple[int, ...], samples: int = SAMPLES,
               steps: int = STEPS, seed: int = 0, *, batch_size: int = BATCH_SIZE,
               progress: Callable[[int, int, str], None] | None = None, device: str = "cpu",
               count: int | None = None,
               memory_budget: int | str | None = None) -> tuple[np.ndarray, str]:
    """``samples`` synthetic inputs of ``shape`` (without batch) and how they were made.

    With BatchNormalization nodes in the graph: each batch of ``batch_size`` inputs starts from
    Gaussian noise and takes ``steps`` Adam steps (lr 0.1) towards the running mean and variance
    of every BN input (per channel, over the batch and the spatial positions); memory is that of
    one training step at ``batch_size``, made smaller where the activations autograd keeps for
    a step would exceed ``memory_budget`` (bytes or a size such as ``"2G"``; default
    :func:`~onnxprune.gates.memory.default_memory_budget`, on CUDA a quarter of the GPU's memory).
    Without them (BatchNorm folded away by the exporter):
    N(0, 1) noise, matching no internal statistics (see the module docstring). ``device`` is a
    torch device (auto|cpu|cuda|cuda:N); ``progress(done, total, label)`` follows the steps.
    ``count`` is the older name of ``samples``.
    """
    samples = samples if count is None else count
    device = resolve_device(device)
    budget = device_budget(memory_budget, device)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((samples, *shape), generator=generator)
    targets = _bn_targets(model)
    if not targets or steps <= 0 or samples == 0:
        if progress is not None:
            progress(1, 1, "gaussian noise")
        return x.numpy(), NOISE if not targets else "gaussian noise (no optimisation steps)"
    graph = TorchGraph(model).float().to(device)
    targets = [(name, mean.float().to(device), var.float().to(device))
               for name, mean, var in targets]
    names = {t[0] for t in targets}
    batch_size = fitting_batch(graph, shape, names, targets, min(max(1, batch_size), samples),
                               budget, device)
    starts = range(0, samples, batch_size)
    for index, start in enumerate(starts):
        batch = x[start:start + batch_size].to(device).requires_grad_(True)
        optimizer = torch.optim.Adam([batch], lr=0.1)
        for step in range(steps):
            _, got = graph.forward_with(batch, names)
            loss = _bn_loss(got, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if progress is not None:
                progress(index * steps + step + 1, len(starts) * steps,
                         f"batch {index + 1}/{len(starts)}")
        x[start:start + batch_size] = batch.detach().cpu()
    return x.numpy(), (f"optimised in batches of {batch_size} for {steps} steps to match "
                       f"the running mean and variance of {len(targets)} BatchNormalization "
                       f"inputs")
