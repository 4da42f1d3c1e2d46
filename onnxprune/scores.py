"""Baseline channel scores (numpy): filter L1 norm, BatchNorm |gamma|, random.

Scores are per global channel; within a group they are divided by the group's maximum so that
one global threshold compares groups fairly. Every method goes through the same selection.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.analysis.groups import ChannelAnalysis
from onnxprune.errors import OnnxPruneError

# op type -> (weight input index, output-channel axis of the weight)
_WEIGHT_OUT_AXIS: dict[str, Callable[[gs.Node], tuple[int, int]]] = {
    "Conv": lambda node: (1, 0),
    "ConvTranspose": lambda node: (1, 1),
    "Gemm": lambda node: (1, 0 if int(node.attrs.get("transB", 0)) else 1),
    "MatMul": lambda node: (1, 1),
}


def _const(tensor: gs.Tensor) -> np.ndarray | None:
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        return np.asarray(tensor.inputs[0].attrs["value"].values)
    return None


def _normalize_per_group(analysis: ChannelAnalysis, raw: np.ndarray) -> np.ndarray:
    scores = raw.copy()
    for g in analysis.groups:
        part = scores[g.offset:g.offset + g.channels]
        peak = part.max() if g.channels else 0.0
        if peak > 0:
            scores[g.offset:g.offset + g.channels] = part / peak
    return scores


def l1_scores(analysis: ChannelAnalysis) -> np.ndarray:
    """Mean |w| of each channel's filters, summed over the coupled sources of its group."""
    raw = np.zeros(analysis.total_channels)
    producers = {t.name: t.inputs[0] for t in analysis.graph.tensors().values() if t.inputs}
    for source, atoms in analysis.source_atoms.items():
        node = producers[source]
        index, axis = _WEIGHT_OUT_AXIS[node.op](node)
        weight = _const(node.inputs[index])
        if weight is None:
            continue
        per_channel = np.abs(np.moveaxis(weight.astype(np.float64), axis, 0)).reshape(
            weight.shape[axis], -1).mean(axis=1)
        channels = analysis.channel_of_atom[atoms]
        np.add.at(raw, channels[channels >= 0], per_channel[channels >= 0])
    return _normalize_per_group(analysis, raw)


def bn_scale_scores(analysis: ChannelAnalysis) -> tuple[np.ndarray, list[str]]:
    """|gamma| of the BatchNormalization on each channel; groups without one fall back to L1.

    Returns the scores and the ids of the groups that fell back.
    """
    raw = np.zeros(analysis.total_channels)
    seen = np.zeros(analysis.total_channels, dtype=bool)
    for node in analysis.graph.nodes:
        if node.op != "BatchNormalization":
            continue
        tracked = analysis.tracked.get(node.inputs[0].name)
        gamma = _const(node.inputs[1])
        if tracked is None or gamma is None:
            continue
        channels = analysis.channel_of_atom[tracked.ids]
        ok = channels >= 0
        np.add.at(raw, channels[ok], np.abs(gamma.astype(np.float64))[ok])
        seen[channels[ok]] = True
    fallback = l1_scores(analysis)
    missing = []
    scores = _normalize_per_group(analysis, raw)
    for g in analysis.groups:
        part = slice(g.offset, g.offset + g.channels)
        if g.prunable and not seen[part].all():
            scores[part] = fallback[part]
            missing.append(g.id)
    return scores, missing


def random_scores(analysis: ChannelAnalysis, seed: int = 0) -> np.ndarray:
    """Uniform random scores from a fixed seed."""
    return np.random.default_rng(seed).random(analysis.total_channels)


def baseline_scores(method: str, analysis: ChannelAnalysis, seed: int = 0):
    """Scores of a baseline ``method`` and a list of notes about how they were made."""
    if method == "l1":
        return l1_scores(analysis), []
    if method == "bn-scale":
        scores, missing = bn_scale_scores(analysis)
        notes = [f"bn-scale: {len(missing)} group(s) have no BatchNormalization "
                 f"(folded into the convs by the exporter); they use the L1 score"] if missing else []
        return scores, notes
    if method == "random":
        return random_scores(analysis, seed), []
    raise OnnxPruneError(f"unknown method '{method}'")


def uniform_within_groups(analysis: ChannelAnalysis, scores: np.ndarray) -> np.ndarray:
    """``scores`` replaced by their rank within each prunable group / the group's width, so that
    one global threshold removes the same fraction of every group, in the order of ``scores``."""
    out = np.asarray(scores, dtype=np.float64).copy()
    for g in analysis.groups:
        if g.prunable and g.channels:
            part = out[g.offset:g.offset + g.channels]
            out[g.offset:g.offset + g.channels] = (np.argsort(np.argsort(part, kind="stable"),
                                                              kind="stable") + 1) / g.channels
    return out


def channel_macs(analysis: ChannelAnalysis) -> np.ndarray:
    """Per global channel: the MACs saved by removing one channel of its group (all else kept),
    from the analysis' MAC terms (the formula ``analyze`` uses)."""
    from onnxprune.select import MacCounter

    counter = MacCounter(analysis)
    everything = np.ones(analysis.total_channels, dtype=bool)
    full = counter.macs(everything)
    out = np.zeros(analysis.total_channels)
    for g in analysis.groups:
        if g.channels:
            one = everything.copy()
            one[g.offset] = False
            out[g.offset:g.offset + g.channels] = full - counter.macs(one)
    return out


def discount_by_macs(analysis: ChannelAnalysis, scores: np.ndarray, power: float = 1.0):
    """``scores`` / (MACs one channel of the group costs)^power: cheap channels are kept longer."""
    return np.asarray(scores, dtype=np.float64) / np.maximum(channel_macs(analysis), 1.0) ** power
