"""Channel tracking: which channel dimensions of an ONNX graph must be pruned together.

Every output channel of a source op (Conv, ConvTranspose, Gemm, MatMul with constant weights)
is an *atom*. Each tensor whose channels we follow is *tracked*: one axis and, per position on
that axis, the atom it carries. Op rules (``onnxprune.ops``) move tracked axes through the
graph, record the constants to slice (*members*), the places where channels are summed over
(*reads*: where masks and gates apply), and attribute fixes; coupling ops union atoms.
Anything a rule cannot follow *blocks* the atoms it touches (a barrier).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.errors import OnnxPruneError


@dataclass(frozen=True)
class Tracked:
    """A tensor's tracked channel axis and the atom at each position of it."""

    axis: int
    ids: np.ndarray


@dataclass(frozen=True)
class Member:
    """A constant input to slice: ``node.inputs[index]`` along ``axis``, one atom per position."""

    node: str
    index: int
    axis: int
    ids: np.ndarray


@dataclass(frozen=True)
class Read:
    """Input ``index`` of ``node`` sums over its channel ``axis``: mask or gate it here."""

    node: str
    index: int
    axis: int
    ids: np.ndarray


@dataclass(frozen=True)
class Fixup:
    """An attribute or shape-constant fix of ``node`` after pruning.

    ``apply(node, kept)`` gets ``kept(ids) -> bool mask`` and edits the gs node in place.
    """

    node: str
    apply: Callable[[gs.Node, Callable[[np.ndarray], np.ndarray]], None]


class AtomSpace:
    """Union-find over channel atoms with a blocked reason per root."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.blocked: dict[int, str] = {}
        self.source_of: list[str] = []

    def new(self, count: int, source: str) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        self.source_of.extend([source] * count)
        return np.arange(start, start + count, dtype=np.int64)

    def find(self, atom: int) -> int:
        parent = self.parent
        root = atom
        while parent[root] != root:
            root = parent[root]
        while parent[atom] != root:
            parent[atom], atom = root, parent[atom]
        return root

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist()):
            rx, ry = self.find(x), self.find(y)
            if rx == ry:
                continue
            low, high = (rx, ry) if rx < ry else (ry, rx)
            self.parent[high] = low
            if high in self.blocked:
                self.blocked.setdefault(low, self.blocked.pop(high))

    def block(self, ids: np.ndarray, reason: str) -> None:
        for atom in np.unique(ids).tolist():
            self.blocked.setdefault(self.find(atom), reason)

    def roots(self) -> np.ndarray:
        return np.array([self.find(a) for a in range(len(self.parent))], dtype=np.int64)


@dataclass
class Context:
    """What an op rule sees and records while the analysis walks the graph."""

    graph: gs.Graph
    shapes: dict[str, tuple[int, ...]]
    space: AtomSpace = field(default_factory=AtomSpace)
    tracked: dict[str, Tracked] = field(default_factory=dict)
    members: list[Member] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)
    fixups: list[Fixup] = field(default_factory=list)
    barriers: list[dict] = field(default_factory=list)
    opset: int = 13
    folded: dict = field(default_factory=dict)  # small int tensors computed from static shapes

    # -- tensors ---------------------------------------------------------------------------
    def get(self, tensor: gs.Tensor | None) -> Tracked | None:
        if tensor is None or not tensor.name:
            return None
        return self.tracked.get(tensor.name)

    def set(self, tensor: gs.Tensor, axis: int, ids: np.ndarray) -> None:
        if axis < 0:
            axis += len(self.shape(tensor))
        self.tracked[tensor.name] = Tracked(axis, np.asarray(ids, dtype=np.int64))

    def shape(self, tensor: gs.Tensor) -> tuple[int, ...]:
        if isinstance(tensor, gs.Constant):
            return tuple(tensor.shape)
        shape = self.shapes.get(tensor.name)
        if shape is None:
            raise _UnknownShape(tensor.name)
        return shape

    def const(self, tensor: gs.Tensor | None) -> np.ndarray | None:
        """The value of a constant input (initializer or Constant node), else None."""
        if tensor is None:
            return None
        if isinstance(tensor, gs.Constant):
            return tensor.values
        if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
            value = tensor.inputs[0].attrs.get("value")
            if isinstance(value, gs.Constant):
                return value.values
        if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Identity":
            # the TorchScript exporter shares equal initializers through Identity nodes
            return self.const(tensor.inputs[0].inputs[0])
        return None

    def value(self, tensor: gs.Tensor | None) -> np.ndarray | None:
        """A constant, or a small integer value folded from static shapes (e.g. Slice bounds)."""
        const = self.const(tensor)
        if const is None and tensor is not None:
            return self.folded.get(tensor.name)
        return const

    # -- recording -------------------------------------------------------------------------
    def source(self, node: gs.Node, tensor: gs.Tensor, axis: int) -> np.ndarray:
        """New atoms: the output channels of a source op."""
        ids = self.space.new(self.shape(tensor)[axis], tensor.name)
        self.set(tensor, axis, ids)
        return ids

    def fixed(self, count: int, reason: str) -> np.ndarray:
        """Atoms for channels that can never be pruned (from an untracked tensor)."""
        ids = self.space.new(count, "")
        self.space.block(ids, reason)
        return ids

    def slice_const(self, node: gs.Node, index: int, axis: int, ids: np.ndarray) -> None:
        """Record that constant input ``index`` of ``node`` is sliced along ``axis``."""
        _own_constant(node, index, self.const(node.inputs[index]))
        self.members.append(Member(node.name, index, axis, np.asarray(ids, dtype=np.int64)))

    def read(self, node: gs.Node, index: int, tracked: Tracked) -> None:
        self.reads.append(Read(node.name, index, tracked.axis, tracked.ids))

    def fixup(self, node: gs.Node, apply) -> None:
        self.fixups.append(Fixup(node.name, apply))

    def fix_const_entry(self, node: gs.Node, slot: int, index: int, ids: np.ndarray,
                        label: str) -> None:
        """After pruning, entry ``index`` of int constant input ``slot`` = kept count of ``ids``."""

        def apply(node, kept):
            values = np.array(self.value(node.inputs[slot]), dtype=np.int64).copy()
            values[index] = int(kept(ids).sum())
            node.inputs[slot] = gs.Constant(f"{node.name}__{label}", values)

        self.fixup(node, apply)

    def barrier(self, node: gs.Node, reason: str, tensors=None, listed: bool = False) -> None:
        """Block every tracked input (or ``tensors``) of ``node`` and report it by name (also
        when nothing tracked reaches it, with ``listed``)."""
        tensors = node.inputs if tensors is None else tensors
        touched = [t for t in tensors if self.get(t) is not None]
        for tensor in touched:
            self.space.block(self.get(tensor).ids, f"{node.op} '{node.name}': {reason}")
        if touched or listed:
            self.barriers.append({"op": node.op, "node": node.name, "reason": reason})


class _UnknownShape(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _own_constant(node: gs.Node, index: int, values: np.ndarray) -> None:
    """Make ``node.inputs[index]`` a gs.Constant used by this node alone (clone if shared).

    ``values`` is the input's constant value (an initializer, a Constant node's or one
    passed through Identity nodes).
    """
    tensor = node.inputs[index]
    if isinstance(tensor, gs.Constant) and len(tensor.outputs) == 1:
        return
    clone = gs.Constant(f"{tensor.name}__{node.name}", np.array(values))
    node.inputs[index] = clone


def run_rules(ctx: Context, rules: dict, named_barriers: dict[str, str] | None = None) -> None:
    """Walk the nodes in topological order and apply each op's rule (or a barrier).

    ``named_barriers`` (op type -> reason) are barriers listed wherever they occur."""
    for node in ctx.graph.nodes:
        outer = _outer_scope_reads(ctx, node)
        if outer:
            ctx.barrier(node, "read inside a subgraph (control flow)", outer)
        default = node.domain in ("", "ai.onnx", None)
        rule = rules.get(node.op) if default else None
        if rule is None and default and node.op in (named_barriers or {}):
            ctx.barrier(node, named_barriers[node.op], listed=True)
            continue
        if rule is None:
            what = f"op '{node.op}'" + (f" of domain '{node.domain}'" if node.domain else "")
            ctx.barrier(node, f"{what} is not understood by the channel analysis")
            continue
        try:
            rule(ctx, node)
        except _UnknownShape as exc:
            ctx.barrier(node, f"shape of '{exc.name}' is unknown")
    for out in ctx.graph.outputs:
        tracked = ctx.get(out)
        if tracked is not None:
            ctx.space.block(tracked.ids, f"graph output '{out.name}' is never pruned")


def _outer_scope_reads(ctx: Context, node: gs.Node) -> list[gs.Tensor]:
    """Tracked tensors of the main graph that a node's subgraphs (If/Loop/Scan bodies) read."""
    subgraphs = [v for v in node.attrs.values() if isinstance(v, gs.Graph)]
    found: dict[str, gs.Tensor] = {}
    while subgraphs:
        graph = subgraphs.pop()
        for inner in graph.nodes:
            for tensor in inner.inputs:
                if ctx.get(tensor) is not None:
                    found[tensor.name] = tensor
            subgraphs.extend(v for v in inner.attrs.values() if isinstance(v, gs.Graph))
    return list(found.values())


def require(condition: bool, message: str) -> None:
    """Raise an internal analysis error (a bug in a rule) when ``condition`` fails."""
    if not condition:
        raise OnnxPruneError(f"channel analysis: {message}")
