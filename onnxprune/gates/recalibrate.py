"""Recalibration after selection (adaptive-BN / EagleEye style, folded into the weights).

Exported graphs have BatchNorm folded into the convs, so pruning shifts each conv output's
per-channel statistics and nothing re-normalizes them. For each conv of the pruned graph, in
topological order, we measure its output's per-channel mean and std on calibration data and
rescale its weights and bias so that they match the original model's statistics for the same
channels: ``y' = (y - μ_p) · σ_o/σ_p + μ_o``. The graph does not grow.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from onnxprune.gates.executor import TorchGraph

_EPS = 1e-6


def _channel_stats(graph: TorchGraph, x: np.ndarray, names: list[str], batch: int):
    """Per-channel (axis 1) mean and std of each named tensor over the calibration set."""
    sums = {n: 0.0 for n in names}
    squares = {n: 0.0 for n in names}
    count = {n: 0 for n in names}
    with torch.no_grad():
        for start in range(0, len(x), batch):
            _, got = graph.forward_with(torch.as_tensor(x[start:start + batch]), set(names))
            for name in names:
                t = got[name].double().transpose(0, 1).reshape(got[name].shape[1], -1)
                sums[name] = sums[name] + t.sum(1)
                squares[name] = squares[name] + (t * t).sum(1)
                count[name] += t.shape[1]
    stats = {}
    for name in names:
        mean = sums[name] / count[name]
        var = (squares[name] / count[name] - mean * mean).clamp_min(0.0)
        stats[name] = (mean.numpy(), var.sqrt().numpy())
    return stats


def _convs(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    inits = {t.name for t in model.graph.initializer}
    users: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    return [n for n in model.graph.node
            if n.op_type == "Conv" and len(n.input) > 1 and n.input[1] in inits
            and users[n.input[1]] == 1 and (len(n.input) < 3 or not n.input[2]
                                           or (n.input[2] in inits and users[n.input[2]] == 1))]


def recalibrate(original: onnx.ModelProto, pruned: onnx.ModelProto, x: np.ndarray,
                kept: Mapping[str, np.ndarray], batch: int = 256) -> tuple[onnx.ModelProto, int]:
    """Return ``pruned`` with conv scales/biases corrected, and how many convs were changed.

    ``kept[tensor]`` lists, for a conv output tensor of the pruned graph, the original channel
    index of each of its channels.
    """
    model = onnx.ModelProto()
    model.CopyFrom(pruned)
    convs = [n for n in _convs(model) if n.output[0] in kept]
    names = [n.output[0] for n in convs]
    reference = _channel_stats(TorchGraph(original), x, names, batch)
    inits = {t.name: t for t in model.graph.initializer}
    changed = 0
    for node in convs:
        name = node.output[0]
        mean_p, std_p = _channel_stats(TorchGraph(model), x, [name], batch)[name]
        mean_o, std_o = (s[kept[name]] for s in reference[name])
        ratio = np.where(std_p > _EPS, std_o / np.maximum(std_p, _EPS), 1.0)
        if np.allclose(ratio, 1.0, atol=1e-4) and np.allclose(mean_p, mean_o, atol=1e-5):
            continue
        weight = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        bias = (numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
                if len(node.input) > 2 and node.input[2] else np.zeros(weight.shape[0]))
        dtype = numpy_helper.to_array(inits[node.input[1]]).dtype
        new_weight = weight * ratio.reshape(-1, *([1] * (weight.ndim - 1)))
        new_bias = (bias - mean_p) * ratio + mean_o
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(new_weight.astype(dtype),
                                                              node.input[1]))
        if len(node.input) > 2 and node.input[2]:
            inits[node.input[2]].CopyFrom(numpy_helper.from_array(new_bias.astype(dtype),
                                                                  node.input[2]))
        else:
            bias_name = f"{name}__recalibrated_bias"
            model.graph.initializer.append(numpy_helper.from_array(new_bias.astype(dtype),
                                                                   bias_name))
            while len(node.input) < 3:
                node.input.append("")
            node.input[2] = bias_name
            inits[bias_name] = model.graph.initializer[-1]
        changed += 1
    return model, changed
