"""Channel groups: the graph-mapped filter index that selection, gates and surgery share.

A group is a set of source ops whose output channels are coupled; its channels are the
connected components of their atoms. Every group channel has one global index, so that keep
masks, gate vectors and scores are flat arrays over all channels of all groups.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.analysis.channels import Context, Fixup, Member, Read, run_rules
from onnxprune.analysis.folding import fold_weight_paths
from onnxprune.analysis.quantized import QUANTIZED_BARRIERS
from onnxprune.analysis.shapes import declared_shape_notes, fold_shape_values, infer_shapes
from onnxprune.errors import OnnxPruneError
from onnxprune.graph import opset_version
from onnxprune.macs import MacExpr, mac_expr


@dataclass(frozen=True)
class Group:
    """One channel group: ``channels`` global indices from ``offset`` on."""

    id: str
    channels: int
    offset: int
    sources: tuple[str, ...]
    prunable: bool
    reason: str | None


@dataclass(frozen=True)
class MacTerm:
    """A node's MACs: ``coeff * count(reduce) * count(out)``; a count is over global channels."""

    expr: MacExpr
    reduce: np.ndarray | None  # global channel index per position (-1: fixed), or None
    out: np.ndarray | None
    fixed_reduce: int
    fixed_out: int


@dataclass
class ChannelAnalysis:
    """Everything known about a graph's prunable channels."""

    graph: gs.Graph
    shapes: dict[str, tuple[int, ...]]
    groups: list[Group]
    channel_of_atom: np.ndarray  # global channel index per atom, -1 for fixed atoms
    members: list[Member]
    reads: list[Read]
    fixups: list[Fixup]
    barriers: list[dict]
    mac_terms: list[MacTerm]
    tracked: dict  # tensor name -> Tracked (axis, atom ids)
    source_atoms: dict[str, np.ndarray]  # source tensor name -> the atom at each channel
    narrow_slots: dict = field(default_factory=dict)  # (node, input) -> fp16 weight behind Cast
    folded: tuple[str, ...] = ()  # tensors computed by constant subgraphs, now initializers
    notes: list[str] = field(default_factory=list)  # e.g. stale declared shapes that were dropped

    @property
    def total_channels(self) -> int:
        return sum(g.channels for g in self.groups)

    def group(self, group_id: str) -> Group:
        for g in self.groups:
            if g.id == group_id:
                return g
        raise OnnxPruneError(f"unknown group id '{group_id}'")

    def channels(self, ids: np.ndarray) -> np.ndarray:
        """Global channel index of each atom in ``ids`` (-1: fixed)."""
        return self.channel_of_atom[ids]

    def prunable_mask(self) -> np.ndarray:
        """Bool over global channels: True where the channel's group is prunable."""
        mask = np.zeros(self.total_channels, dtype=bool)
        for g in self.groups:
            mask[g.offset:g.offset + g.channels] = g.prunable
        return mask

    def macs(self, keep: np.ndarray | None = None) -> int:
        """Total MACs when only the global channels where ``keep`` is True remain."""
        keep = np.ones(self.total_channels, dtype=bool) if keep is None else keep
        return int(round(sum(_term_value(t, keep.astype(np.float64)) for t in self.mac_terms)))

    def why_nothing_prunable(self) -> str | None:
        """Why no group is prunable, in one line a user can act on (None when one is)."""
        if any(g.prunable for g in self.groups):
            return None
        quantized = [b for b in self.barriers if b["op"] in QUANTIZED_BARRIERS]
        if quantized:
            first = quantized[0]
            return (f"the model is quantized ({len(quantized)} quantized node(s), first "
                    f"{first['op']} '{first['node']}'): {first['reason'].split(': ', 1)[-1]}")
        if not self.groups:
            computed = [b for b in self.barriers if "not constant" in b["reason"]]
            if computed:
                first = computed[0]
                return (f"no channel group: the weights of {len(computed)} node(s) are computed "
                        f"at run time (first {first['op']} '{first['node']}': {first['reason']})")
            return ("no channel group: the graph has no Conv, ConvTranspose, Gemm or MatMul "
                    "with constant weights")
        reasons = list(dict.fromkeys(g.reason for g in self.groups if g.reason))
        more = f" (and {len(reasons) - 2} other reasons)" if len(reasons) > 2 else ""
        return (f"all {len(self.groups)} channel group(s) are blocked: "
                f"{'; '.join(reasons[:2])}{more}")

    def prunable_macs(self) -> int:
        """MACs of the nodes that read or write at least one prunable channel."""
        prunable = self.prunable_mask()
        full = np.ones(self.total_channels)
        return int(sum(_term_value(t, full) for t in self.mac_terms
                       if any(side is not None and prunable[side[side >= 0]].any()
                              for side in (t.reduce, t.out))))

    def group_macs(self) -> dict[str, int]:
        """MACs of the nodes that read or write each group's channels."""
        owner = np.empty(self.total_channels, dtype=np.int64)
        for i, g in enumerate(self.groups):
            owner[g.offset:g.offset + g.channels] = i
        totals = [0] * len(self.groups)
        full = np.ones(self.total_channels)
        for term in self.mac_terms:
            touched = set()
            for side in (term.reduce, term.out):
                if side is not None:
                    touched.update(owner[side[side >= 0]].tolist())
            for i in touched:
                totals[i] += int(_term_value(term, full))
        return {g.id: totals[i] for i, g in enumerate(self.groups)}


def _term_value(term: MacTerm, keep: np.ndarray) -> float:
    """The one MAC formula evaluated with (soft or hard) kept counts; numpy version."""
    def count(side, fixed):
        if side is None:
            return fixed
        real = side[side >= 0]
        return float(keep[real].sum()) + float((side < 0).sum())

    return term.expr.evaluate(lambda axis: count(*((term.reduce, term.fixed_reduce)
                                                   if axis == term.expr.reduce
                                                   else (term.out, term.fixed_out))))


def analyze_channels(model: onnx.ModelProto, shapes: Mapping | None = None,
                     input_shapes: Mapping | None = None) -> ChannelAnalysis:
    """Run every op rule over ``model`` and build its channel groups.

    ``input_shapes`` ({input name: dims}) sizes dynamic input dims for shape inference only.
    """
    from onnxprune.ops import RULES

    folded = fold_weight_paths(model)
    model = folded.model
    shapes = dict(shapes) if shapes is not None else infer_shapes(model, input_shapes=input_shapes)
    graph = gs.import_onnx(model)
    ctx = Context(graph=graph, shapes=shapes, opset=opset_version(model),
                  folded=fold_shape_values(model, shapes))
    run_rules(ctx, RULES, QUANTIZED_BARRIERS)
    groups, channel_of_atom = _build_groups(ctx)
    terms = _mac_terms(model, ctx, channel_of_atom)
    source_atoms: dict[str, list[int]] = {}
    for atom, name in enumerate(ctx.space.source_of):
        if name:
            source_atoms.setdefault(name, []).append(atom)
    # per position of the source's channel axis (a grouped conv's atoms repeat per group)
    positions = {k: ctx.tracked[k].ids if k in ctx.tracked else np.array(v, dtype=np.int64)
                 for k, v in source_atoms.items()}
    return ChannelAnalysis(graph, shapes, groups, channel_of_atom, ctx.members, ctx.reads,
                           ctx.fixups, ctx.barriers, terms, ctx.tracked, positions,
                           folded.narrow_slots, folded.tensors,
                           declared_shape_notes(model, shapes))


def _build_groups(ctx: Context) -> tuple[list[Group], np.ndarray]:
    space = ctx.space
    roots = space.roots()
    sources_of_root: dict[int, list[str]] = {}
    order: list[str] = []
    for atom, name in enumerate(space.source_of):
        if not name:
            continue
        if name not in sources_of_root.setdefault(int(roots[atom]), []):
            sources_of_root[int(roots[atom])].append(name)
        if not order or order[-1] != name:
            order.append(name)
    # union sources sharing a component (small union-find over source names)
    parent = {name: name for name in order}

    def find(name):
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    position = {name: i for i, name in enumerate(order)}
    for names in sources_of_root.values():
        for other in names[1:]:
            a, b = find(names[0]), find(other)
            if a != b:
                first, second = sorted((a, b), key=position.__getitem__)
                parent[second] = first
    members: dict[str, list[str]] = {}
    for name in order:
        members.setdefault(find(name), []).append(name)
    channel_of_atom = np.full(len(roots), -1, dtype=np.int64)
    channel_of_root: dict[int, int] = {}
    groups: list[Group] = []
    offset = 0
    atoms_of_source: dict[str, list[int]] = {}
    for atom, name in enumerate(space.source_of):
        if name:
            atoms_of_source.setdefault(name, []).append(atom)
    for head in (n for n in order if find(n) == n):
        start = offset
        roots_here = []
        for name in members[head]:
            for root in roots[atoms_of_source[name]].tolist():
                if root not in channel_of_root:
                    channel_of_root[root] = offset
                    roots_here.append(root)
                    offset += 1
        reasons = [space.blocked[r] for r in roots_here if r in space.blocked]
        groups.append(Group(head, offset - start, start, tuple(members[head]),
                            not reasons, reasons[0] if reasons else None))
    root_channel = np.full(len(roots), -1, dtype=np.int64)
    for root, channel in channel_of_root.items():
        root_channel[root] = channel
    channel_of_atom[:] = root_channel[roots] if len(roots) else channel_of_atom
    return groups, channel_of_atom


def _mac_terms(model: onnx.ModelProto, ctx: Context, channel_of_atom: np.ndarray) -> list[MacTerm]:
    terms = []
    for node in model.graph.node:
        expr = mac_expr(node, ctx.shapes)
        if expr is None:
            continue
        sides = []
        for axis in (expr.reduce, expr.out):
            tracked = ctx.tracked.get(axis[0]) if axis else None
            if axis is not None and tracked is not None and tracked.axis == axis[1]:
                sides.append((channel_of_atom[tracked.ids], 0))
            else:
                sides.append((None, ctx.shapes[axis[0]][axis[1]] if axis else 1))
        (reduce, fixed_reduce), (out, fixed_out) = sides
        terms.append(MacTerm(expr, reduce, out, fixed_reduce, fixed_out))
    return terms


def keep_mask(analysis: ChannelAnalysis, keep: Mapping[str, Sequence[int]]) -> np.ndarray:
    """A plan's ``keep`` as a bool array over global channels (absent groups keep all)."""
    mask = np.ones(analysis.total_channels, dtype=bool)
    for group_id, indices in keep.items():
        g = analysis.group(group_id)
        mask[g.offset:g.offset + g.channels] = False
        mask[g.offset + np.asarray(indices, dtype=np.int64)] = True
    return mask
