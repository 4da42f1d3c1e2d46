"""The sweep of one recalibration: a compiled graph run step by step over every calibration batch,
with the activations still needed cached on the device up to a memory budget and spilled to a
temporary folder of ``.npy`` files past it (removed at the end, also on an error).

The calibration set is only ever indexed one batch at a time (``x[int index array]``), so it may
be a lazy array-like (a memory-mapped ``.npz``, a dataset decoding images) that is never
materialised whole."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter

import numpy as np
import torch

from onnxprune.errors import OnnxPruneError
from onnxprune.gates.executor import TorchGraph


class Cache:
    """Per-batch activations of the sweeps: on the device while they fit in ``budget`` bytes
    (all sweeps together), past that written to ``.npy`` files in a temporary folder and read
    back when used."""

    def __init__(self, budget: int, device: str):
        self.budget, self.device = max(int(budget), 0), device
        self.used = self.peak = self.spilled = 0
        self.folder: str | None = None

    def put(self, tensor: torch.Tensor):
        size = tensor.numel() * tensor.element_size()
        if self.used + size <= self.budget or tensor.dtype == torch.bfloat16:  # numpy has none
            self.used += size
            self.peak = max(self.peak, self.used)
            return tensor, size
        if self.folder is None:
            self.folder = tempfile.mkdtemp(prefix="onnxprune-recalibrate-")
        path = os.path.join(self.folder, f"{self.spilled}.npy")
        self.spilled += 1
        np.save(path, tensor.detach().cpu().numpy())
        return path, 0

    def get(self, entry) -> torch.Tensor:
        value = entry[0]
        if isinstance(value, str):
            return torch.from_numpy(np.load(value)).to(self.device)
        return value

    def drop(self, entry) -> None:
        value, size = entry
        self.used -= size
        if isinstance(value, str):
            os.unlink(value)

    def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


class Inputs:
    """The calibration batches: ``x[indices[start:stop]]`` for each batch (``indices`` defaults
    to all of ``x``). ``x`` is an array or a lazy array-like (``len``, indexing by an int array);
    a lazy one is read once per batch and cached (within the budget) for both sweeps, an array
    is indexed again when needed."""

    def __init__(self, x, batch: int, cache: Cache, indices=None):
        self.x, self.cache = x, cache
        self.indices = (np.arange(len(x)) if indices is None
                        else np.asarray(indices, dtype=np.int64).reshape(-1))
        count = len(self.indices)
        self.bounds = [(s, min(s + batch, count)) for s in range(0, count, batch)]
        self.keep = not isinstance(x, np.ndarray)
        self.entries: dict[int, tuple] = {}

    def __len__(self) -> int:
        return len(self.indices)

    def get(self, b: int) -> torch.Tensor:
        if b in self.entries:
            return self.cache.get(self.entries[b])
        start, stop = self.bounds[b]
        value = torch.as_tensor(np.ascontiguousarray(self.x[self.indices[start:stop]]))
        value = value.to(self.cache.device)
        if self.keep:
            self.entries[b] = self.cache.put(value)
        return value


class Sweep:
    """A TorchGraph's compiled steps, run one at a time, each over every calibration batch.

    Only tensors that a later step reads, or that are ``wanted`` (until ``release``d), stay
    in the cache: memory is the graph's frontier × the calibration set, never all activations
    of all layers. Steps that no wanted tensor depends on are never run.
    """

    def __init__(self, graph: TorchGraph, inputs: Inputs, cache: Cache, wanted: Counter):
        if len(graph.input_names) != 1:
            raise OnnxPruneError(f"recalibration needs a model with one input, "
                                 f"got {len(graph.input_names)}")
        self.graph, self.inputs, self.cache, self.device = graph, inputs, cache, cache.device
        self.input = graph.input_names[0]
        # executor hook wanted: a public list of compiled steps (see the report of issue 13)
        self.steps = list(graph._runtime)  # (fn, input names, output names), in node order
        self.producer = {o: k for k, (_, _, outs) in enumerate(self.steps) for o in outs}
        self.wanted = Counter(wanted)
        self.live = self._live(set(self.wanted))
        self.last_read: dict[str, int] = {}
        for k in sorted(self.live):
            for name in self.steps[k][1]:
                self.last_read[name] = k
        self.values: dict[str, list] = {}
        self.overrides: dict[str, torch.Tensor] = {}
        self.next = 0  # every step before it has run (or is not needed)

    @property
    def batches(self) -> int:
        return len(self.inputs.bounds)

    def _live(self, needed: set[str]) -> set[int]:
        live = set()
        for k in range(len(self.steps) - 1, -1, -1):
            _, ins, outs = self.steps[k]
            if needed.intersection(outs):
                live.add(k)
                needed.update(ins)
        return live

    def value(self, name: str, b: int) -> torch.Tensor:
        """``name`` on calibration batch ``b`` (computed already, an input or a constant)."""
        if name in self.overrides:
            return self.overrides[name]
        if name in self.values:
            return self.cache.get(self.values[name][b])
        if name == self.input:
            return self.inputs.get(b)
        if name not in self.producer and self.graph._is_const(name):
            return self.graph._constant(name)
        raise OnnxPruneError(f"recalibration: tensor '{name}' is not available (a bug)")

    def peek(self, name: str, b: int) -> torch.Tensor:
        """``name`` on batch ``b`` with the weights of now, running the steps it needs that the
        sweep has not reached yet (for this batch only; nothing is stored)."""
        if self.producer.get(name, -1) < self.next:
            return self.value(name, b)
        needed, todo = {name}, []
        for k in range(self.producer[name], self.next - 1, -1):
            _, ins, outs = self.steps[k]
            if needed.intersection(outs):
                todo.append(k)
                needed.update(i for i in ins if self.producer.get(i, -1) >= self.next)
        local: dict[str, torch.Tensor] = {}
        for k in reversed(todo):
            fn, ins, outs = self.steps[k]
            result = fn(*[local[i] if i in local else self.value(i, b) for i in ins])
            local.update(zip(outs, (result,) if len(outs) == 1 else result))
        return local[name]

    def advance(self, names) -> None:
        """Run the steps up to the one that produces the last of ``names``."""
        self.advance_to(max((self.producer[n] + 1 for n in names if n in self.producer),
                            default=0))

    def advance_to(self, stop: int) -> None:
        """Run every needed step before step ``stop``."""
        for k in range(self.next, stop):
            if k in self.live:
                self._run(k)
            self.next = k + 1

    def _run(self, k: int) -> None:
        fn, ins, outs = self.steps[k]
        keep = {o for o in outs if self.last_read.get(o, -1) > k or self.wanted[o] > 0}
        stored: dict[str, list] = {o: [] for o in keep}
        for b in range(self.batches):
            result = fn(*[self.value(i, b) for i in ins])
            for name, item in zip(outs, (result,) if len(outs) == 1 else result):
                if name in stored:
                    stored[name].append(self.cache.put(item))
        self.values.update(stored)
        self.next = k + 1
        for name in set(ins):
            self._maybe_free(name)

    def replace(self, k: int, fn, ins: list[str], constants: dict[str, torch.Tensor]) -> None:
        """Step ``k`` (not run yet) computes with ``fn`` from ``ins``, reading ``constants``."""
        self.steps[k] = (fn, ins, self.steps[k][2])
        self.overrides.update(constants)

    def release(self, names) -> None:
        for name in names:
            self.wanted[name] -= 1
            self._maybe_free(name)

    def _maybe_free(self, name: str) -> None:
        if (name in self.values and self.last_read.get(name, -1) < self.next
                and self.wanted[name] <= 0):
            for entry in self.values.pop(name):
                self.cache.drop(entry)


def activation_bytes(graph: TorchGraph, sample: np.ndarray, batch: int = 1) -> int:
    """Peak bytes a sweep of ``graph`` caches for one calibration ``sample`` (without its batch
    axis): each tensor from the step that makes it to its last reader, as ``Sweep`` keeps them
    (the inputs and outputs a fit reads are among them). Runs the graph once, on ``batch``
    copies of the sample (a model with a fixed batch size), and divides."""
    cache = Cache(1 << 62, "cpu")
    x = np.repeat(np.ascontiguousarray(sample, dtype=np.float32)[None], batch, axis=0)
    sweep = Sweep(graph, Inputs(x, batch, cache), cache, Counter(graph.output_names))
    with torch.no_grad():
        sweep.advance_to(len(sweep.steps))
    return -(-cache.peak // batch)
