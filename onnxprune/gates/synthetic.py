"""Data-free inputs: match BatchNormalization running statistics (ZeroQ / DeepInversion style).

Where the graph keeps BatchNormalization nodes, a batch of inputs is optimized so that the
mean and variance each BN sees match its running statistics; otherwise the inputs are
standard Gaussian noise in the model's (preprocessed) input space.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from onnxprune.gates.executor import TorchGraph


def _bn_targets(model: onnx.ModelProto):
    inits = {t.name: t for t in model.graph.initializer}
    targets = []
    for node in model.graph.node:
        if node.op_type == "BatchNormalization" and all(n in inits for n in node.input[3:5]):
            mean = numpy_helper.to_array(inits[node.input[3]])
            var = numpy_helper.to_array(inits[node.input[4]])
            targets.append((node.input[0], torch.as_tensor(mean), torch.as_tensor(var)))
    return targets


def synthesize(model: onnx.ModelProto, shape: tuple[int, ...], count: int = 512,
               steps: int = 200, seed: int = 0) -> tuple[np.ndarray, str]:
    """``count`` synthetic inputs of ``shape`` (without batch) and how they were made."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((count, *shape), generator=generator)
    targets = _bn_targets(model)
    if not targets:
        return x.numpy(), "gaussian noise (the graph has no BatchNormalization statistics)"
    graph = TorchGraph(model).float()
    x.requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=0.1)
    names = {t[0] for t in targets}
    for _ in range(steps):
        _, got = graph.forward_with(x, names)
        loss = 0.0
        for name, mean, var in targets:
            t = got[name].transpose(0, 1).reshape(got[name].shape[1], -1)
            loss = loss + (t.mean(1) - mean).norm() + (t.var(1) - var).norm()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return x.detach().numpy(), f"optimized to match {len(targets)} BatchNormalization statistics"
