"""AutoBot gate training on the graph-mapped filter index.

One gate per prunable channel (λ = sigmoid(α), λ₀ = 0.9), multiplied into the model wherever
the channel is summed over (the analysis' reads, the same places the masked reference zeroes),
so a zero gate is exactly what the surgery removes. The model's weights stay frozen; Adam
trains α on task loss + β·L_flops + γ·L_bool, with the soft MACs from the analysis' MAC terms
(the formula ``analyze`` uses, with Σλ in place of channel counts).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from onnxprune.analysis.groups import ChannelAnalysis
from onnxprune.gates.config import GateConfig
from onnxprune.gates.device import resolve_device
from onnxprune.gates.executor import TorchGraph
from onnxprune.gates.loader import Batches, batch_loader, epoch_order
from onnxprune.select import MacCounter


@dataclass
class GateResult:
    """Trained gate values per global channel (1.0 for channels that cannot be pruned)."""

    gates: np.ndarray
    best_iteration: int
    history: list[dict] = field(default_factory=list)
    alpha: np.ndarray | None = None


class GatedGraph:
    """A TorchGraph whose reads are multiplied by gates over the analysis' global channels."""

    def __init__(self, model, analysis: ChannelAnalysis, device: str = "cpu"):
        self.analysis = analysis
        self.device = device
        self.prunable = np.flatnonzero(analysis.prunable_mask())
        # fp16/bf16 models train in float32
        self.graph = TorchGraph(model).float().to(device)
        self.alpha = torch.nn.Parameter(torch.zeros(len(self.prunable), device=device))
        self._full: torch.Tensor | None = None
        self._index = torch.as_tensor(self.prunable, dtype=torch.long, device=device)
        self.gating = True
        hooks = {}
        for read in analysis.reads:
            channels = analysis.channel_of_atom[read.ids]
            prunable = analysis.prunable_mask()
            usable = (channels >= 0) & prunable[np.maximum(channels, 0)]
            if not usable.any():
                continue
            gather = torch.as_tensor(np.where(usable, channels, analysis.total_channels),
                                     device=device)
            hooks[(read.node, read.index)] = self._hook(gather, read.axis)
        self.graph.set_read_hooks(hooks)
        counter = MacCounter(analysis)
        self.coeff, self.reduce, self.out, self.fixed_reduce, self.fixed_out = (
            torch.as_tensor(a, device=device) for a in (
                counter.coeff, counter.reduce, counter.out, counter.fixed_reduce,
                counter.fixed_out))
        self.macs_before = float(counter.macs(np.ones(analysis.total_channels, dtype=bool)))

    def _hook(self, gather: torch.Tensor, axis: int) -> Callable:
        def apply(x: torch.Tensor) -> torch.Tensor:
            if not self.gating:
                return x
            shape = [1] * x.dim()
            shape[axis] = -1
            return x * self._full[gather].view(shape)

        return apply

    def lambdas(self) -> torch.Tensor:
        return torch.sigmoid(self.alpha)

    def full_gates(self) -> torch.Tensor:
        """Gates over all global channels plus a trailing 1 for fixed positions."""
        full = torch.ones(self.analysis.total_channels + 1, dtype=self.alpha.dtype,
                          device=self.alpha.device)
        return full.index_copy(0, self._index, self.lambdas())

    def forward(self, x: torch.Tensor, gated: bool = True):
        self.gating = gated
        self._full = self.full_gates() if gated else None
        try:
            return self.graph(x)
        finally:
            self._full = None

    def soft_macs(self) -> torch.Tensor:
        """The MAC formula with Σλ in place of channel counts (differentiable)."""
        g = self.full_gates()[:-1].to(torch.float64)
        reduce = self.reduce @ g + self.fixed_reduce
        out = self.out @ g + self.fixed_out
        return (self.coeff * reduce * out).sum()


def flops_loss(macs: torch.Tensor, target: float, maximum: float) -> torch.Tensor:
    """AutoBot's L_flops: (F−T)/(F_max−T) above the target, else 1 − F/T."""
    if macs.item() > target:
        return (macs - target) / max(maximum - target, 1e-9)
    return 1.0 - macs / target


def bool_loss(gated: GatedGraph) -> torch.Tensor:
    """AutoBot's L_bool: mean over prunable groups of mean |λ − round(λ)|."""
    lam = gated.lambdas()
    dist = (lam - torch.round(lam.detach())).abs()
    per_group = []
    offset = 0
    for g in gated.analysis.groups:
        if g.prunable:
            per_group.append(dist[offset:offset + g.channels].mean())
            offset += g.channels
    return torch.stack(per_group).mean() if per_group else lam.sum() * 0.0


def task_loss(logits: torch.Tensor, labels: torch.Tensor | None,
              teacher: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy with labels, else distillation: KL on class logits, MSE otherwise."""
    if labels is not None:
        return F.cross_entropy(logits, labels)
    if logits.dim() == 2 and logits.shape[1] > 1:
        return F.kl_div(F.log_softmax(logits, 1), F.log_softmax(teacher, 1), log_target=True,
                        reduction="batchmean")
    return F.mse_loss(logits, teacher)


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def train_gates(model, analysis: ChannelAnalysis, x: np.ndarray, y: np.ndarray | None,
                target: float, config: GateConfig = GateConfig(),
                progress: Callable[[dict], None] | None = None,
                state: dict | None = None, *, device: str = "cpu",
                workers: int = 0) -> GateResult:
    """Train one gate per prunable channel towards ``target`` × the original MACs, on torch
    ``device`` (auto|cpu|cuda|cuda:N; each batch is moved there).

    ``x`` is array-like (a lazy dataset or an array): the batches (seeded permutations, fixed
    before training) come through a ``DataLoader`` decoding them in ``workers`` processes
    (``onnxprune.gates.loader``), the same batches for any number of workers."""
    device = resolve_device(device)
    torch.manual_seed(config.seed)
    gated = GatedGraph(model, analysis, device)
    with torch.no_grad():
        gated.alpha.fill_(math.log(config.init / (1.0 - config.init)))
    optimizer = torch.optim.Adam([gated.alpha], lr=config.lr)
    start, best = 0, (math.inf, -1, gated.alpha.detach().clone())
    if state:  # resume
        start, best = _restore(gated, optimizer, state)
    target_macs = target * gated.macs_before
    order = epoch_order(len(x), config.batch_size, config.iterations, config.seed)
    batches = batch_loader(x, y, Batches(order, config.batch_size, start, config.iterations),
                           workers=workers, seed=config.seed,
                           pin_memory=device.startswith("cuda"))
    history = []
    for it, batch in zip(range(start, config.iterations), batches):
        xb = batch[0].to(device)
        yb = batch[1].to(device) if y is not None else None
        teacher = None
        if yb is None:
            with torch.no_grad():
                teacher = _first(gated.forward(xb, gated=False))
        logits = _first(gated.forward(xb))
        macs = gated.soft_macs()
        terms = {
            "task": task_loss(logits, yb, teacher),
            "flops": flops_loss(macs, target_macs, gated.macs_before).float(),
            "bool": bool_loss(gated),
        }
        loss = terms["task"] + config.beta * terms["flops"] + config.gamma * terms["bool"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        record = {"iteration": it + 1, "loss": float(loss.detach()),
                  "macs_ratio": float(macs.detach()) / gated.macs_before,
                  **{k: float(v.detach()) for k, v in terms.items()}}
        history.append(record)
        if it + 1 >= config.keep_best_after * config.iterations and record["loss"] < best[0]:
            best = (record["loss"], it + 1, gated.alpha.detach().clone())
        if progress:
            progress(record, lambda: _snapshot(gated, optimizer, it + 1, best))
    alpha = best[2] if best[1] > 0 else gated.alpha.detach()
    gates = np.ones(analysis.total_channels)
    alpha = alpha.cpu()
    gates[gated.prunable] = torch.sigmoid(alpha).numpy()
    return GateResult(gates, best[1], history, alpha.numpy())


def _snapshot(gated: GatedGraph, optimizer, iteration: int, best) -> dict:
    """The training state as numpy arrays (for a checkpoint)."""
    adam = optimizer.state[gated.alpha]
    return {
        "iteration": iteration, "alpha": gated.alpha.detach().cpu().numpy().copy(),
        "adam_step": float(adam["step"]), "adam_exp_avg": adam["exp_avg"].cpu().numpy().copy(),
        "adam_exp_avg_sq": adam["exp_avg_sq"].cpu().numpy().copy(),
        "best_loss": best[0], "best_iteration": best[1],
        "best_alpha": best[2].cpu().numpy().copy(),
    }


def _restore(gated: GatedGraph, optimizer, state: dict):
    """Load a snapshot into the gates and the optimizer; returns (start, best)."""
    device = gated.alpha.device
    alpha = torch.as_tensor(np.asarray(state["alpha"], dtype=np.float32), device=device)
    if alpha.shape != gated.alpha.shape:
        from onnxprune.errors import OnnxPruneError

        raise OnnxPruneError("checkpoint does not match this model's channel groups")
    gated.alpha.data.copy_(alpha)
    optimizer.state[gated.alpha] = {
        "step": torch.tensor(float(state["adam_step"])),
        "exp_avg": torch.as_tensor(np.asarray(state["adam_exp_avg"], dtype=np.float32),
                                   device=device),
        "exp_avg_sq": torch.as_tensor(np.asarray(state["adam_exp_avg_sq"], dtype=np.float32),
                                      device=device),
    }
    best = (float(state["best_loss"]), int(state["best_iteration"]),
            torch.as_tensor(np.asarray(state["best_alpha"], dtype=np.float32), device=device))
    return int(state["iteration"]), best
