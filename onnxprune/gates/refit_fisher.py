"""Loss-weighted refit costs (``--refit-weighting fisher``) and the choice between weightings
(``auto``).

``fisher``: each reading layer's output rows are weighted by the Fisher diagonal of its output,
F_o = Σ (∂L/∂y_o)² over samples and positions, L the cross-entropy of labels drawn from the
model's own softmax (no labels needed), so that the refit cost is a loss increase
ΔL ≈ Σ_o F_o·Δy_o² rather than an error relative to the layer's output (``refit_select``).

``auto``: both weightings' selections are pruned and recalibrated, and the one whose outputs
stay closer to the original's on calibration samples held out of the refit (the distillation
loss of the gates: KL divergence of class logits, MSE otherwise) wins; the pipeline then
recalibrates the winner once more, with its own settings (exclusions, frozen layers). On the Fashion-MNIST validation split that picked Fisher for the deep residual nets and
relative for the shallow ones (``benchmarks/yardstick_val_fisher.json``), at twice the cost of
the refit scores.
"""

from __future__ import annotations

import numpy as np
import torch

from onnxprune.gates.executor import TorchGraph

FISHER_BATCH = 16  # samples per backward pass (autograd keeps the activations)
HELD_OUT = 1024  # samples of the data, outside the calibration pick, that judge ``auto``


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


def choose_weighting(model, analysis, x, target: float, *, round_to, samples: int, seed: int,
                     device: str, progress=None, **rounds) -> tuple[np.ndarray, str, dict]:
    """``auto``: (scores, the weighting that won, {weighting: its distance}). Each weighting's
    ``iterative_refit_scores`` (``rounds``: its other keywords) is selected at ``target``,
    pruned and recalibrated as its rounds are, and judged on ``HELD_OUT`` samples outside the
    calibration pick (the pick itself when the data has no more); ``progress(k)`` counts the
    rounds of both."""
    from onnxprune.gates.refit_select import ROUNDS, _pruned_recalibrated, iterative_refit_scores
    from onnxprune.lazydata import subset
    from onnxprune.select import select

    order = np.random.default_rng(seed).permutation(len(x))
    held = np.sort(order[samples:samples + HELD_OUT])
    held = held if len(held) else np.sort(order[:samples])
    batch = rounds.get("batch", 64)
    cal_samples, cal_batch = rounds.pop("recalibration", None) or (samples, batch)
    reference = _outputs(model, subset(x, held), batch, device)
    found = {}
    for k, weighting in enumerate(("relative", "fisher")):
        def step(r, k=k):
            if progress is not None:
                progress(k * rounds.get("rounds", ROUNDS) + r)

        scores = iterative_refit_scores(model, analysis, x, target, round_to=round_to,
                                        samples=samples, seed=seed, device=device,
                                        weighting=weighting, progress=step,
                                        recalibration=(cal_samples, cal_batch), **rounds)
        keep = select(analysis, scores, target, round_to(analysis) if round_to else 1).keep
        pruned = _pruned_recalibrated(model, analysis, keep, x, cal_samples, cal_batch, seed,
                                      device, rounds.get("memory_budget"))
        found[weighting] = (scores, _distance(reference, _outputs(pruned, subset(x, held),
                                                                 batch, device)))
    best = min(found, key=lambda w: found[w][1])
    return found[best][0], best, {w: round(float(d), 6) for w, (_, d) in found.items()}


def _outputs(model, x, batch: int, device: str) -> torch.Tensor:
    """The first output over ``x``, in batches, on the CPU."""
    graph = TorchGraph(model).float().to(device)
    parts = []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            out = graph(torch.as_tensor(x[start:start + batch]).to(device))
            parts.append((out[0] if isinstance(out, tuple) else out).float().cpu())
    return torch.cat(parts)


def _distance(reference: torch.Tensor, pruned: torch.Tensor) -> float:
    """The gates' distillation loss of ``pruned`` against ``reference`` (``autobot.task_loss``:
    KL on class logits, MSE otherwise)."""
    from onnxprune.gates.autobot import task_loss

    return float(task_loss(pruned, None, reference))
