"""Loss-weighted refit costs (``--refit-weighting fisher``; the choice ``auto`` between
weightings is ``refit_choice``).

``fisher``: each reading layer's output rows are weighted by the Fisher diagonal of its output,
F_o = Σ (∂L/∂y_o)² over samples and positions, L the cross-entropy of labels drawn from the
model's own softmax (no labels needed), so that the refit cost is a loss increase
ΔL ≈ Σ_o F_o·Δy_o² rather than an error relative to the layer's output (``refit_select``).
"""

from __future__ import annotations

import numpy as np
import torch

from onnxprune.gates.executor import TorchGraph

FISHER_BATCH = 16  # samples per backward pass (autograd keeps the activations)


def collect_fisher(model, layers: list, x, batch: int, device: str,
                   seed: int = 0) -> None:
    """Each layer's ``fisher``: Σ over samples and output positions of (∂L/∂y_o)², y the
    layer's output, L the cross-entropy of labels drawn from the model's own softmax over the
    first output's axis 1 (the Fisher's diagonal; Gaussian noise on outputs without classes)."""
    graph = TorchGraph(model).float().to(device)
    names = [layer.node.outputs[0].name for layer in layers]
    generator = torch.Generator().manual_seed(seed)

    def track(t: torch.Tensor) -> torch.Tensor:
        return t if t.requires_grad or not t.is_floating_point() else t.requires_grad_(True)

    graph.set_read_hooks({(l.read.node, l.read.index): track for l in layers})
    for layer in layers:
        layer.fisher = np.zeros(layer.w.shape[0])
    for start in range(0, len(x), batch):
        outputs, got = graph.forward_with(torch.as_tensor(x[start:start + batch]).to(device),
                                          names)
        first = outputs[0] if isinstance(outputs, tuple) else outputs
        wanted = [got[n] for n in names]
        loss = _sampled_loss(first, generator)
        if not loss.requires_grad:  # the output does not depend on any reading layer
            continue
        grads = torch.autograd.grad(loss, wanted, allow_unused=True)
        for layer, g in zip(layers, grads):
            if g is not None:
                g = g.detach().double()
                layer.fisher += (g * g).transpose(0, 1).reshape(g.shape[1], -1).sum(1).cpu().numpy()
        del outputs, got, wanted, grads


def _sampled_loss(logits: torch.Tensor, generator) -> torch.Tensor:
    """Σ −log p(ŷ) with ŷ drawn from softmax(logits) along axis 1 (Σ ε·y, ε ~ N(0, 1), for an
    output without a class axis)."""
    if logits.ndim < 2 or logits.shape[1] < 2:
        noise = torch.randn(logits.shape, generator=generator).to(logits.device, logits.dtype)
        return (logits * noise).sum()
    logp = torch.log_softmax(logits.float(), 1).movedim(1, -1)
    flat = logp.reshape(-1, logp.shape[-1])
    drawn = torch.multinomial(flat.detach().exp().cpu(), 1, generator=generator).to(flat.device)
    return -flat.gather(1, drawn).sum()
