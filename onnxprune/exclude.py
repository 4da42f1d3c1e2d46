"""``--exclude PATTERN``: layers the user wants left alone keep every channel they touch.

A pattern (a glob, ``fnmatch`` style) names nodes by node name or by the name of one of their
input or output tensors. Every channel group that a matched node reads or writes (its input and
output channels, the weight axes sliced with them) becomes unprunable, so surgery leaves the
node's weights bit-identical; the groups are reported as excluded by the user.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Sequence

import numpy as np

from onnxprune.analysis.groups import ChannelAnalysis
from onnxprune.errors import OnnxPruneError


def matched_nodes(analysis: ChannelAnalysis, patterns: Sequence[str]) -> dict[str, list[str]]:
    """pattern -> names of the nodes it matches; a pattern that matches nothing is an error."""
    found = {}
    for pattern in patterns:
        names = [node.name for node in analysis.graph.nodes
                 if fnmatch.fnmatchcase(node.name, pattern)
                 or any(fnmatch.fnmatchcase(t.name, pattern)
                        for t in (*node.inputs, *node.outputs))]
        if not names:
            raise OnnxPruneError(f"--exclude '{pattern}' matches no node or tensor of the model")
        found[pattern] = names
    return found


def _touched_channels(analysis: ChannelAnalysis, nodes: set[str]) -> np.ndarray:
    """Global channel indices that the given nodes read, write or slice."""
    atoms = []
    for node in analysis.graph.nodes:
        if node.name not in nodes:
            continue
        for tensor in (*node.inputs, *node.outputs):
            tracked = analysis.tracked.get(tensor.name)
            if tracked is not None:
                atoms.append(np.asarray(tracked.ids))
    atoms.extend(np.asarray(m.ids) for m in analysis.members if m.node in nodes)
    atoms.extend(np.asarray(r.ids) for r in analysis.reads if r.node in nodes)
    if not atoms:
        return np.zeros(0, dtype=np.int64)
    channels = analysis.channels(np.concatenate(atoms).astype(np.int64))
    return np.unique(channels[channels >= 0])


def exclude_groups(analysis: ChannelAnalysis, patterns: Sequence[str]
                   ) -> tuple[ChannelAnalysis, list[dict]]:
    """A copy of ``analysis`` whose groups touched by the matched layers are unprunable, and the
    report rows [{pattern, nodes, groups}]."""
    if not patterns:
        return analysis, []
    rows, excluded = [], {}
    for pattern, nodes in matched_nodes(analysis, patterns).items():
        channels = _touched_channels(analysis, set(nodes))
        ids = [g.id for g in analysis.groups
               if np.any((channels >= g.offset) & (channels < g.offset + g.channels))]
        for group_id in ids:
            excluded.setdefault(group_id, pattern)
        rows.append({"pattern": pattern, "nodes": nodes, "groups": ids})
    groups = [dataclasses.replace(g, prunable=False,
                                  reason=f"excluded by the user (--exclude '{excluded[g.id]}')")
              if g.id in excluded and g.prunable else g for g in analysis.groups]
    return dataclasses.replace(analysis, groups=groups), rows
