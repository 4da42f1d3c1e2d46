"""Reconstruction-aware channel scores (``--method refit``): which channels the least-squares
refit can do without.

``compress`` refits every layer after pruning (``recalibrate``, mode reconstruct): a layer that
reads a pruned group gets the weights that best reproduce its original output from the channels
left. So a channel matters by how much of that output the *remaining* channels cannot rebuild,
not by its own norm (ThiNet, Luo et al. 2017; channel pruning, He et al. 2017). For one reading
layer (a Conv with ``group=1`` or a Gemm, its input as im2col rows X and weights W with a bias
column) removing the input columns ``b`` of a channel and refitting the rest costs exactly

    ΔE = tr(W_b (H⁻¹)_bb⁻¹ W_bᵀ),   H = XᵀX + ρ·mean(diag)·I

(the structured Optimal Brain Surgeon step, as in OBC/SparseGPT), and the refit weights and H⁻¹
follow in closed form. Per group, channels are removed greedily, each time the one whose summed
cost over the group's reading layers, each relative to that layer's output energy tr(W H Wᵀ),
is least; a channel's score is the cumulative relative error when it goes (monotone within the
group). How groups compare (``allocation``): ``uniform`` ranks within each group, so one global
threshold removes the same fraction of every group (in refit order); ``error`` prunes every
group to the same relative refit error; ``macs`` divides that error by the MACs one channel of
the group costs.
Groups without such a reader (or read by grouped convs only) fall back to the L1 score, scaled
below every refit score of the model so that the selection takes them in L1 order last.

Weighting ``fisher`` (opt-in, ``compress --refit-weighting fisher``) measures each reading
layer's error in loss units instead of relative to its output energy: the output rows of W are
weighted by the Fisher diagonal F_o = E[(∂L/∂y_o)²] of the layer's output y (labels drawn
from the model's own softmax, so no labels are needed), ΔL ≈ Σ_o F_o·Δy_o². It helped the
deep residual nets on Fashion-MNIST validation (ResNet-56 +1.4/+1.5 points, MobileNetV2
+0.2/+0.8 at 0.5/0.25 MACs) and hurt the shallow ones (VGG −0.3/−0.1, ResNet −0.2/−1.0),
so it is not the default (``benchmarks/yardstick_val_fisher.json``).

H comes from the original model on calibration images (read hooks of ``TorchGraph``, the
tensors the gates multiply), at most ``max_rows`` random im2col rows per batch.
"""

from __future__ import annotations

import numpy as np
import torch

from onnxprune.analysis.groups import ChannelAnalysis
from onnxprune.gates.device import resolve_device
from onnxprune.gates.executor import TorchGraph

DAMP = 1e-2  # ρ: H's ridge as a fraction of its mean diagonal
MAX_ROWS = 4096  # im2col rows per calibration batch of 64 entering H (in proportion otherwise)
GRAM_DTYPE = torch.float32  # one batch's XᵀX (4096 rows; summed in float64): H within 2e-7 of
# float64's, the accumulation pass 1.27x faster on ResNet-50 (benchmarks/refit_gram_cpu.json),
# the same ranks and selections on the Fashion-MNIST models
GREEDY_STEPS = 256  # greedy steps of a group at most (wider groups lose several per step)


class _Layer:
    """One reading layer: H (its input's Gram matrix, bias column last) and W [out, fan + 1]."""

    def __init__(self, node, read, analysis: ChannelAnalysis):
        from onnxprune.scores import _const

        self.node, self.read = node, read
        weight = _const(node.inputs[1]).astype(np.float64)
        if node.op == "Gemm":
            weight = weight if int(node.attrs.get("transB", 0)) else weight.T
            self.kernel, self.attrs = None, {}
        else:
            self.kernel = tuple(weight.shape[2:])
            self.attrs = dict(node.attrs)
        bias = (_const(node.inputs[2]) if len(node.inputs) > 2 else None)
        out = weight.shape[0]
        bias = np.zeros(out) if bias is None else bias.astype(np.float64).reshape(-1)
        self.w = np.concatenate([weight.reshape(out, -1), bias[:, None]], 1)
        per_input = int(np.prod(self.kernel)) if self.kernel else 1
        channels = analysis.channel_of_atom[read.ids]
        self.column_channel = np.append(np.repeat(channels, per_input), -1)  # -1: bias, fixed
        self.gram = None
        self.rows = 0  # im2col rows in H
        self.fisher = None  # Σ (∂L/∂y_o)² per output channel o, when the costs are loss-weighted
        self.generator = torch.Generator().manual_seed(0)
        self.max_rows = MAX_ROWS  # per batch; _collect sets it in proportion to the batch

    def add(self, x: torch.Tensor) -> None:
        """Accumulate H over a batch: at most ``max_rows`` random im2col rows, gathered from
        the input directly (no unfold of the whole batch)."""
        if self.kernel is None:
            self._accumulate(x.reshape(x.shape[0], -1).to(GRAM_DTYPE))
            return
        self._accumulate(_sampled_columns(x, self.kernel, self.attrs, self.generator,
                                          self.max_rows).to(GRAM_DTYPE), sampled=True)

    def _accumulate(self, cols: torch.Tensor, sampled: bool = False) -> None:
        if not sampled and cols.shape[0] > self.max_rows:
            rows = torch.randperm(cols.shape[0], generator=self.generator)[:self.max_rows]
            cols = cols[rows.to(cols.device)]
        cols = torch.cat([cols, torch.ones(len(cols), 1, dtype=cols.dtype, device=cols.device)], 1)
        g = (cols.T @ cols).double()  # one batch's product in GRAM_DTYPE, the sum in float64
        self.rows += len(cols)
        self.gram = g if self.gram is None else self.gram + g

    def start(self) -> None:
        """H⁻¹ (damped), the weights as a tensor and the output energy tr(W H Wᵀ); ``pos``
        maps an original column to its place in the (compacted) H⁻¹ and W, −1 once gone."""
        h = self.gram
        damp = DAMP * torch.diagonal(h).mean().clamp_min(1e-12)
        eye = torch.eye(len(h), dtype=h.dtype, device=h.device)
        self.hinv = torch.linalg.inv(h + damp * eye)
        self.wt = torch.tensor(self.w, dtype=h.dtype, device=h.device)  # a copy: updated in place
        if self.fisher is None:
            self.energy = float(torch.einsum("oi,ij,oj->", self.wt, h, self.wt).clamp_min(1e-12))
        else:  # rows weighted by the loss' curvature: costs in loss units, not relative
            weight = torch.as_tensor(self.fisher / max(self.rows, 1), dtype=h.dtype,
                                     device=h.device).clamp_min(0)
            self.wt *= weight.sqrt()[:, None]
            self.energy = 1.0
        self.pos = torch.arange(len(h), device=h.device)
        self.dead = torch.zeros(len(h), dtype=torch.bool, device=h.device)  # removed, not shrunk

    def stop(self) -> None:
        """Free what start() made (H stays, for another group this layer reads)."""
        self.hinv = self.wt = self.pos = self.dead = None

    def blocks(self, channels) -> torch.Tensor | None:
        """[channels, k]: the input columns of each channel (None if not all the same size)."""
        found = [np.flatnonzero(self.column_channel == c) for c in channels]
        if len({len(f) for f in found}) != 1:
            return None
        return torch.as_tensor(np.stack(found), device=self.hinv.device)

    def costs(self, idx: torch.Tensor) -> torch.Tensor:
        """Relative output error of removing each row of columns ``idx`` [n, k] (alone) and
        refitting the rest: tr(W_b S⁻¹ W_bᵀ) / energy = tr(S⁻¹ W_bᵀW_b) / energy,
        S = H⁻¹[b, b]; the k×k blocks W_bᵀW_b come from W's columns (n·k²·out a step)."""
        idx = self.pos[idx]
        if idx.shape[1] == 1:  # one column per channel: a quotient of two diagonals
            col = idx[:, 0]
            w = self.wt[:, col]
            return (w * w).sum(0) / self.hinv[col, col] / self.energy
        block = idx[:, :, None], idx[:, None, :]
        out = []
        chunk = max(1, (1 << 23) // max(1, self.wt.shape[0] * idx.shape[1]))  # ≤ 64 MB of W_b
        for part in range(0, len(idx), chunk):
            rows = slice(part, part + chunk)
            wb = self.wt[:, idx[rows]]  # [out, n, k]
            wtw = torch.einsum("onk,onl->nkl", wb, wb)
            inner = torch.linalg.solve(self.hinv[block[0][rows], block[1][rows]], wtw)
            out.append(inner.diagonal(dim1=1, dim2=2).sum(1))
        return torch.cat(out) / self.energy

    def remove(self, b: torch.Tensor) -> None:
        """The OBS update: refit the remaining weights and drop the original columns ``b``
        from H⁻¹, in place (one BLAS pass per term); once a quarter of the columns are gone,
        H⁻¹ and W shrink to the live ones."""
        b = self.pos[b]
        s = self.hinv[b][:, b]
        rows = self.hinv[b]  # [|b|, fan]
        try:
            step = torch.linalg.solve(s, rows)  # S⁻¹ H⁻¹[b, :]
        except RuntimeError:
            return
        self.wt.addmm_(self.wt[:, b], step, alpha=-1.0)
        self.hinv.addmm_(rows.T, step, alpha=-1.0)
        self.hinv[b] = 0.0
        self.hinv[:, b] = 0.0
        self.wt[:, b] = 0.0
        self.dead[b] = True
        if int(self.dead.sum()) * 4 >= len(self.hinv):
            self._compact()

    def weights(self) -> torch.Tensor:
        """The refitted W over the original columns (zero where removed)."""
        full = torch.zeros(self.wt.shape[0], len(self.pos), dtype=self.wt.dtype,
                           device=self.wt.device)
        live = self.pos >= 0
        full[:, live] = self.wt[:, self.pos[live]]
        return full

    def _compact(self) -> None:
        """Keep only the live columns of H⁻¹ and W (the removed, zeroed ones go)."""
        live = torch.nonzero(~self.dead).flatten()
        self.hinv = self.hinv[live][:, live].contiguous()
        self.wt = self.wt[:, live].contiguous()
        where = torch.full((len(self.dead),), -1, dtype=torch.long, device=live.device)
        where[live] = torch.arange(len(live), device=live.device)
        known = self.pos >= 0
        self.pos[known] = where[self.pos[known]]
        self.dead = torch.zeros(len(live), dtype=torch.bool, device=live.device)


def _sampled_columns(x: torch.Tensor, kernel, attrs: dict, generator,
                     max_rows: int = MAX_ROWS) -> torch.Tensor:
    """At most ``max_rows`` random rows of ``F.unfold``'s im2col matrix of a Conv input
    (rows: sample × output position; columns: channel-major, then kernel row and column), the
    same rows in the same order as sampling the whole unfolded batch, gathered directly."""
    from onnxprune.gates.im2col import conv_rows, output_size

    oh, ow = output_size(x, kernel, attrs)
    total = x.shape[0] * oh * ow
    rows = (torch.randperm(total, generator=generator)[:max_rows] if total > max_rows
            else torch.arange(total))
    return conv_rows(x, kernel, attrs, rows)


def _reading_layers(analysis: ChannelAnalysis) -> list[_Layer]:
    from onnxprune.scores import _const

    nodes = {n.name: n for n in analysis.graph.nodes}
    layers = []
    for read in analysis.reads:
        node = nodes.get(read.node)
        if node is None or read.index != 0 or read.axis != 1 or len(node.inputs) < 2:
            continue
        if _const(node.inputs[1]) is None:
            continue
        if node.op == "Conv":
            auto = node.attrs.get("auto_pad", "NOTSET")
            auto = auto.decode() if isinstance(auto, bytes) else auto
            if int(node.attrs.get("group", 1)) != 1 or auto not in ("NOTSET", "VALID") \
                    or _const(node.inputs[1]).ndim != 4:
                continue
        elif node.op == "Gemm":
            if int(node.attrs.get("transA", 0)) or float(node.attrs.get("alpha", 1.0)) != 1.0 \
                    or float(node.attrs.get("beta", 1.0)) != 1.0:
                continue
        else:
            continue
        layers.append(_Layer(node, read, analysis))
    return layers


def _collect(model, layers: list[_Layer], x, batch: int, device: str) -> None:
    """Accumulate each layer's H over ``x`` (an array or a lazy one), ``batch`` rows at a time
    (``MAX_ROWS`` im2col rows per batch of 64, in proportion for another batch, so the rows in
    all do not depend on the batch)."""
    graph = TorchGraph(model).float().to(device)
    for layer in layers:
        layer.max_rows = max(1, MAX_ROWS * batch // 64)

    def hook(layer):
        def record(t: torch.Tensor) -> torch.Tensor:
            layer.add(t.detach())
            return t

        return record

    graph.set_read_hooks({(l.read.node, l.read.index): hook(l) for l in layers})
    with torch.no_grad():
        for start in range(0, len(x), batch):
            graph(torch.as_tensor(x[start:start + batch]).to(device))


def _group_scores(channels: range, layers: list[_Layer]) -> np.ndarray | None:
    """Cumulative relative refit error at each channel's greedy removal (None: the group's
    channels have uneven column counts in some reader). A group of more than
    ``GREEDY_STEPS`` channels loses its cheapest ``ceil(channels / GREEDY_STEPS)`` per step
    (one joint OBS update), so a step's cost does not grow the step count with the width."""
    for layer in layers:
        layer.start()
    try:
        blocks = [layer.blocks(channels) for layer in layers]
        if any(b is None for b in blocks):
            return None
        per_step = -(-len(channels) // GREEDY_STEPS)
        alive = np.ones(len(channels), dtype=bool)
        scores, total = np.zeros(len(channels)), 0.0
        while alive.any():
            left = np.flatnonzero(alive)
            cost = sum(layer.costs(b[left]) for layer, b in zip(layers, blocks))
            cost = torch.nan_to_num(cost, nan=float("inf")).cpu()
            order = torch.argsort(cost, stable=True)[:per_step].numpy()
            for k in order:
                total += max(float(cost[k]), 0.0)
                scores[left[k]] = total
            picks = left[order]
            alive[picks] = False
            if alive.any():
                for layer, b in zip(layers, blocks):
                    layer.remove(b[picks].reshape(-1))
        return scores
    finally:
        for layer in layers:
            layer.stop()


ALLOCATIONS = ("macs", "uniform", "error")  # macs: chosen on validation (issue 14,
# benchmarks/yardstick_val_search.json): best mean over the cells, no cell far behind


def refit_scores(model, analysis: ChannelAnalysis, x, *, samples: int = 512,
                 seed: int = 0, batch: int = 64, device: str = "cpu",
                 allocation: str = "macs", mac_power: float = 1.0,
                 weighting: str = "relative") -> np.ndarray:
    """Per global channel, higher = keep: the cumulative relative refit error when the greedy
    removal of its group reaches it (see the module docstring), made comparable across groups
    by ``allocation``: ``macs`` (the default: divided by one channel's MACs^``mac_power``, the
    error per MAC saved), ``uniform`` (rank within the group: every group loses the same
    fraction) or ``error`` (as is: every group pruned to the same relative refit error).
    ``x``: the training inputs, an array or a lazy one; ``samples`` of them are used, the same
    seeded pick as the recalibration's."""
    from onnxprune.scores import discount_by_macs, uniform_within_groups

    if allocation not in ALLOCATIONS:
        raise ValueError(f"unknown allocation {allocation!r}")
    raw = raw_refit_scores(model, analysis, x, samples=samples, seed=seed, batch=batch,
                           device=device, weighting=weighting)
    if allocation == "uniform":
        return uniform_within_groups(analysis, raw)
    if allocation == "macs":
        return discount_by_macs(analysis, raw, mac_power)
    return raw


def raw_refit_scores(model, analysis: ChannelAnalysis, x, *, samples: int = 512,
                     seed: int = 0, batch: int = 64, device: str = "cpu",
                     weighting: str = "relative") -> np.ndarray:
    """The cumulative relative refit errors (``allocation="error"``); groups without a
    reading layer fall back to L1 below every refit score, groups that cannot be pruned get
    a score above every other."""
    from onnxprune.lazydata import subset
    from onnxprune.scores import l1_scores

    device = resolve_device(device)
    pick = np.sort(np.random.default_rng(seed).permutation(len(x))[:samples])
    if len(pick) >= batch:  # whole batches only: a model may fix its batch size
        pick = pick[:len(pick) // batch * batch]
    layers = _reading_layers(analysis)
    _collect(model, layers, subset(x, pick), batch, device)  # read one batch at a time
    if weighting == "fisher":
        dims = model.graph.input[0].type.tensor_type.shape.dim
        fixed = bool(dims) and dims[0].dim_value > 0  # a fixed batch: keep the scoring one
        from onnxprune.gates.refit_fisher import FISHER_BATCH, collect_fisher

        collect_fisher(model, layers, subset(x, pick), batch if fixed else min(batch, FISHER_BATCH),
                       device, seed)
    scores = np.zeros(analysis.total_channels)
    fallback = []
    for g in analysis.groups:
        if not g.prunable:
            scores[g.offset:g.offset + g.channels] = np.inf
            continue
        channels = range(g.offset, g.offset + g.channels)
        readers = [l for l in layers if np.isin(l.column_channel, channels).any()]
        part = (None if not readers or any(l.gram is None for l in readers)
                else _group_scores(channels, readers))
        if part is None:
            fallback.append(g)
            continue
        scores[g.offset:g.offset + g.channels] = part
    finite = scores[np.isfinite(scores) & (scores > 0)]
    floor = finite.min() if len(finite) else 1.0
    l1 = l1_scores(analysis)
    for g in fallback:  # below every refit score, in L1 order
        part = slice(g.offset, g.offset + g.channels)
        scores[part] = floor * 0.5 * l1[part] / max(l1[part].max(), 1e-12)
    scores[~np.isfinite(scores)] = scores[np.isfinite(scores)].max(initial=1.0) * 2 + 1
    return scores



def iterative_refit_scores(model, analysis: ChannelAnalysis, x, target: float, *,
                           rounds: int = 2, round_to=None, samples: int = 512, seed: int = 0,
                           batch: int = 64, device: str = "cpu", allocation: str = "macs",
                           mac_power: float = 1.0, memory_budget=None, weighting: str = "relative",
                           recalibration: tuple[int, int] | None = None,
                           progress=None, initial: np.ndarray | None = None) -> np.ndarray:
    """Refit scores reached in ``rounds`` steps (an OBS-style schedule): round k prunes to
    ``target**(k/rounds)`` of the original MACs with scores measured on the model pruned so far
    and recalibrated (least squares, against the *original* model's outputs, on the same
    calibration pick), so that each round scores the channels left where their inputs already
    carry the earlier rounds' error. Returns scores over ``analysis``' channels in bands:
    channels dropped in round 1 below those dropped in round 2, ..., below the kept ones; within
    a band in that round's score order. ``select`` at ``target`` then removes the earlier rounds'
    channels first and the last round's lowest. ``round_to``: a callable giving the
    ``select`` multiple for an analysis (``None``: 1). ``rounds=1`` is :func:`refit_scores`.
    ``memory_budget`` bounds the rounds' recalibrations (see ``recalibrate``), which run on
    the first ``recalibration = (samples, batch)`` of the pick (default: ``samples``,
    ``batch``; compress passes the count its memory budget holds); ``progress(k)`` is called
    after round k. ``initial``: round 1's scores when already known (they do not depend on
    ``rounds``: ``refit_choice`` shares them between candidates)."""
    from onnxprune.select import select

    def refit(m, a):
        return refit_scores(m, a, x, samples=samples, seed=seed, batch=batch, device=device,
                            allocation=allocation, mac_power=mac_power, weighting=weighting)

    scores = refit(model, analysis) if initial is None else initial
    if progress is not None:
        progress(1)
    if rounds <= 1:
        return scores
    multiple = round_to or (lambda a: 1)
    n = analysis.total_channels
    keep = np.ones(n, dtype=bool)
    out = np.zeros(n)  # dropped in round k: k + its rank in that round's scores
    macs_original = _macs(analysis)
    current, where = analysis, np.arange(n)  # where: current channel -> original channel
    for k in range(1, rounds):
        fraction = target ** (k / rounds) * macs_original / _macs(current)
        selection = select(current, scores, min(fraction, 1.0), multiple(current))
        dropped = ~selection.keep
        out[where[dropped]] = k + _rank(scores)[dropped]
        keep[where[dropped]] = False
        pruned = _pruned_recalibrated(model, analysis, keep, x,
                                      *(recalibration or (samples, batch)), seed, device,
                                      memory_budget)
        current, where = _map_channels(pruned, analysis, keep)
        scores = refit(pruned, current)
        if progress is not None:
            progress(k + 1)
    out[where] = rounds + _rank(scores)  # the last round's: above every earlier band
    return out


def _rank(scores: np.ndarray) -> np.ndarray:
    """Global rank of each score in [0, 1), ties in index order."""
    order = np.argsort(np.argsort(scores, kind="stable"), kind="stable")
    return order / max(len(scores), 1)


def _macs(analysis: ChannelAnalysis) -> float:
    from onnxprune.select import MacCounter

    return MacCounter(analysis).macs(np.ones(analysis.total_channels, dtype=bool))


def _pruned_recalibrated(model, analysis, keep, x, samples, batch, seed, device,
                         memory_budget=None):
    """``model`` pruned to ``keep`` and refitted by least squares against its own outputs."""
    from onnxprune.analysis.groups import analyze_channels
    from onnxprune.gates.recalibrate import recalibrate
    from onnxprune.lazydata import subset
    from onnxprune.pipeline import kept_channels
    from onnxprune.surgery import prune_model

    plan = {}
    for g in analysis.groups:
        kept = np.flatnonzero(keep[g.offset:g.offset + g.channels])
        if len(kept) < g.channels:
            plan[g.id] = kept.tolist()
    pruned = prune_model(model, plan, analysis=analyze_channels(model))
    pick = np.sort(np.random.default_rng(seed).permutation(len(x))[:samples])
    pruned, _ = recalibrate(model, pruned, subset(x, pick), kept_channels(analysis, keep),
                            mode="reconstruct", device=device, batch_size=batch,
                            memory_budget=memory_budget)
    return pruned


def _map_channels(pruned, analysis: ChannelAnalysis, keep: np.ndarray):
    """The pruned model's analysis and, per its global channel, the original channel (groups
    matched by their source tensors; group ids may name another source after surgery). A group
    unprunable in ``analysis`` (e.g. ``--exclude``) stays so in the new one."""
    import dataclasses

    from onnxprune.analysis.groups import analyze_channels

    new = analyze_channels(pruned)
    by_source = {s: g for g in analysis.groups for s in g.sources}
    where = np.zeros(new.total_channels, dtype=np.int64)
    groups = []
    for g2 in new.groups:
        g = by_source[g2.sources[0]]
        kept = g.offset + np.flatnonzero(keep[g.offset:g.offset + g.channels])
        if len(kept) != g2.channels:
            raise ValueError(f"group {g2.id}: {g2.channels} channels after surgery, "
                             f"{len(kept)} kept")
        where[g2.offset:g2.offset + g2.channels] = kept
        groups.append(g2 if g.prunable or not g2.prunable else
                      dataclasses.replace(g2, prunable=False, reason=g.reason))
    return dataclasses.replace(new, groups=groups), where
