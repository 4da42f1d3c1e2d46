"""Per-node profile in ONNX Runtime: where the time of each model goes, and why a pruned model's
measured speedup falls short of its MAC ratio.

``profile_models`` runs every model with ``SessionOptions.enable_profiling`` (interleaved, after a
warm-up), parses the Chrome-trace JSON that onnxruntime writes into a temporary folder (deleted
afterwards) and returns one JSON-ready dict:

- ``onnxruntime``, ``provider`` (the provider the sessions really ran on), ``batch``, ``runs``,
  ``warmup``
- ``models``: one entry per model, in the given order: ``{name, macs, total_us, kernel_us,
  overhead_us, ops, nodes, layers}``. Times are microseconds per run (median over the runs).
  ``total_us`` is onnxruntime's own ``model_run`` time, ``kernel_us`` the sum of the node times and
  ``overhead_us`` the rest (session and executor work outside the kernels). ``ops`` maps each op
  type as it ran, after onnxruntime's fusions and layout changes (a fused Conv+Relu is one
  ``Conv``; ``ReorderInput``/``ReorderOutput`` convert to and from the blocked NCHWc layout), to
  ``{us, nodes, macs}``. ``nodes`` lists ``{node, op, layer, us}`` in execution order; ``layer`` is
  the original graph node that a fused node computes (for a fused conv: the conv), or null for
  nodes onnxruntime inserted (layout conversions). ``layers`` maps each layer to ``{us, macs}``.
- ``comparisons``: one entry per model after the first, against the first (see
  ``compare_profiles``), each with its ``gap`` culprits (see ``explain_gap``).

onnxruntime is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx

from onnxprune.errors import OnnxPruneError
from onnxprune.macs import MAC_OPS

OVERHEAD = "(outside kernels)"
# Ops that onnxruntime fuses into the conv or gemm before them (the fused node is named after
# the last fused op's output tensor).
FUSABLE = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
                     "Elu", "Selu", "Add", "Sum", "Mul", "BatchNormalization"})
_SUFFIX = re.compile(r"(_nchwc|_token_\d+|_kernel_time)+$")
_PREFIX = re.compile(r"^fused ")  # Conv/Gemm + activation fusions outside the NCHWc layout
_DEFAULT_WARMUP = 5
# A layer is worse than its MAC ratio when its time ratio exceeds the MAC ratio by more than this
# fraction: node times are whole microseconds, so tiny layers carry that much noise.
MARGIN = 0.1
# An op named for its grown time must hold at least this share of the gap (a 1 µs op that took
# 2 µs once is noise, not a finding).
MIN_SHARE = 0.02


def profile_models(models, provider: str = "cpu", batch: int = 1, runs: int = 20,
                   warmup: int = _DEFAULT_WARMUP, threads: int | None = None,
                   names=None) -> dict:
    """Profile ``models`` (paths or ModelProtos) node by node; see the module docstring."""
    from onnxprune.runtime.session import model_proto, ort_version

    if not models:
        raise OnnxPruneError("profile needs at least one model")
    if batch < 1 or runs < 1 or warmup < 0:
        raise OnnxPruneError(f"profile: batch and runs must be positive and warmup >= 0 "
                             f"(got batch {batch}, runs {runs}, warmup {warmup})")
    loaded = [model_proto(m) for m in models]
    protos = [_named(proto) for proto, _, _ in loaded]
    labels = list(names) if names else [label for _, label, _ in loaded]
    # over 2 GB a model is read from its (already checked) path, unless it had to be renamed
    paths = [path if named is proto else None for named, (proto, _, path) in zip(protos, loaded)]
    with tempfile.TemporaryDirectory(prefix="onnxprune-profile-") as folder:
        traces, used = _run_profiled(protos, paths, labels, provider, batch, runs + warmup,
                                     threads, Path(folder))
    entries = [_model_entry(label, proto, trace, warmup)
               for label, proto, trace in zip(labels, protos, traces)]
    result = {"onnxruntime": ort_version(), "provider": used, "batch": int(batch),
              "runs": int(runs), "warmup": int(warmup), "models": entries}
    result["comparisons"] = [compare_profiles(entries[0], other) for other in entries[1:]]
    return result


def _named(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` itself, or a copy whose nodes all have unique names (profile rows need them)."""
    from onnxprune.graph import ensure_node_names

    names = [n.name for n in proto.graph.node]
    if all(names) and len(set(names)) == len(names):
        return proto
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    ensure_node_names(copy)
    return copy


def _run_profiled(protos, paths, labels, provider, batch, total_runs, threads, folder: Path):
    """Interleaved profiled runs of every model; each model's trace events and the provider."""
    from onnxprune.runtime.bench import random_inputs
    from onnxprune.runtime.session import RuntimeSession, _session_source, create_session

    checked = [create_session(p, provider, threads, n) for p, n in zip(protos, labels)]
    used = {rs.provider for rs in checked}
    if len(used) != 1:
        raise OnnxPruneError(f"sessions ran on different providers ({', '.join(sorted(used))}); "
                             f"refusing to compare")
    sessions = [_profiling_session(_session_source(p, path, rs.name), rs, threads,
                                   folder / f"model{i}")
                for i, (p, path, rs) in enumerate(zip(protos, paths, checked))]
    wrapped = [RuntimeSession(s, rs.provider, rs.providers, rs.requested, rs.name)
               for s, rs in zip(sessions, checked)]
    feeds = [random_inputs(rs, batch) for rs in wrapped]
    order = list(range(len(sessions)))
    try:
        for i in range(total_runs):
            for k in (order if i % 2 == 0 else order[::-1]):
                sessions[k].run(None, feeds[k])
    except Exception as exc:
        raise OnnxPruneError(f"inference failed while profiling "
                             f"({' '.join(str(exc).split())[:300]})") from None
    traces = []
    for session in sessions:
        with open(session.end_profiling(), encoding="utf-8") as handle:
            traces.append(json.load(handle))
    return traces, used.pop()


def _profiling_session(source, checked, threads, prefix: Path):
    """A session like ``checked`` (same providers) that writes a profile under ``prefix``."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.enable_profiling = True
    options.profile_file_prefix = str(prefix)
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    return onnxruntime.InferenceSession(source, options, providers=list(checked.providers))


def parse_trace(events: list[dict], warmup: int = 0) -> tuple[list[dict], float | None]:
    """Median microseconds per run of each profiled node, in execution order, and the median
    ``model_run`` time (None when the trace has none). The first ``warmup`` runs are dropped."""
    events = events.get("traceEvents", events) if isinstance(events, dict) else events
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                     if e.get("cat") == "Session" and e.get("name") == "model_run")
    kept = windows[warmup:]
    starts = [w[0] for w in kept]
    per_run: dict[str, list[float]] = defaultdict(lambda: [0.0] * max(len(kept), 1))
    ops: dict[str, str] = {}
    for event in sorted((e for e in events if e.get("cat") == "Node"), key=lambda e: e["ts"]):
        if not event.get("name", "").endswith("_kernel_time"):
            continue  # fence_before / fence_after markers of older versions
        run = _run_index(event["ts"], kept, starts)
        if run is None:
            continue
        name = event["name"][:-len("_kernel_time")]
        ops.setdefault(name, str(event.get("args", {}).get("op_name", "?")))
        per_run[name][run] += float(event["dur"])
    nodes = [{"node": n, "op": ops[n], "us": float(np.median(v))} for n, v in per_run.items()]
    total = float(np.median([b - a for a, b in kept])) if kept else None
    return nodes, total


def _run_index(ts: float, windows, starts) -> int | None:
    if not windows:
        return 0
    i = int(np.searchsorted(starts, ts, side="right")) - 1
    if i >= 0 and windows[i][0] <= ts <= windows[i][1]:
        return i
    return None


def layer_resolver(model: onnx.ModelProto):
    """A function from a profiled node name to the original node it computes (or None).

    An exact node name is that node (``fused NAME``: the conv or gemm NAME). onnxruntime
    names a fused node after the output tensor of its last fused op, with a suffix
    (``_nchwc``); such a name leads to the tensor's producer and from there back through
    fusable ops (activations, Add, ...) to the conv or gemm they follow.
    """
    nodes = {n.name: n for n in model.graph.node}
    producer = {out: n for n in model.graph.node for out in n.output}

    def resolve(name: str) -> str | None:
        if name in nodes:
            return name
        bare = _PREFIX.sub("", name)
        if bare in nodes:
            return _mac_ancestor(nodes[bare], producer) or bare
        node = producer.get(_SUFFIX.sub("", bare))
        if node is None:
            return None
        return _mac_ancestor(node, producer) or node.name

    return resolve


def _mac_ancestor(node, producer, steps: int = 8) -> str | None:
    """The MAC node that ``node`` was fused onto, walking back through fusable ops."""
    for _ in range(steps):
        if node.op_type in MAC_OPS:
            return node.name
        if node.op_type not in FUSABLE:
            return None
        parents = [producer[t] for t in node.input if t in producer]
        if not parents:
            return None
        macs = [p for p in parents if p.op_type in MAC_OPS]
        node = macs[0] if macs else parents[0]
    return None


def _model_entry(label: str, proto: onnx.ModelProto, trace, warmup: int) -> dict:
    from onnxprune.analysis.summary import summarize

    nodes, total = parse_trace(trace, warmup)
    if not nodes:
        raise OnnxPruneError(f"{label}: the onnxruntime profile holds no node timings")
    macs = {r["node"]: r["macs"] for r in summarize(proto)["macs_per_node"]}
    resolve = layer_resolver(proto)
    layers: dict[str, dict] = {}
    ops: dict[str, dict] = {}
    op_layers: dict[str, set] = defaultdict(set)
    for row in nodes:
        row["layer"] = resolve(row["node"])
        op = ops.setdefault(row["op"], {"us": 0.0, "nodes": 0, "macs": 0})
        op["us"] += row["us"]
        op["nodes"] += 1
        if row["layer"] is None:
            continue
        layer = layers.setdefault(row["layer"], {"us": 0.0, "macs": macs.get(row["layer"], 0)})
        layer["us"] += row["us"]
        if row["layer"] in macs and row["layer"] not in op_layers[row["op"]]:
            op_layers[row["op"]].add(row["layer"])
            op["macs"] += macs[row["layer"]]
    kernel = sum(r["us"] for r in nodes)
    total = total if total is not None else kernel
    return {"name": label, "macs": int(sum(macs.values())), "total_us": total,
            "kernel_us": kernel, "overhead_us": max(total - kernel, 0.0),
            "ops": dict(sorted(ops.items(), key=lambda kv: -kv[1]["us"])),
            "nodes": nodes, "layers": layers}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def compare_profiles(original: dict, pruned: dict, margin: float = MARGIN) -> dict:
    """Per op type, per node and per layer: pruned/original time and MAC ratios.

    ``mac_fraction`` f is the pruned model's MACs over the original's: the MAC ratio predicts
    pruned time = f × original time. Each op's ``excess_us`` = pruned µs − f × original µs, so the
    excesses (with the ``(outside kernels)`` row) add up to ``gap_us`` = pruned total − f ×
    original total, the time the pruned model spends beyond what its MAC ratio predicts.
    A layer is ``worse_than_macs`` when its time ratio exceeds its MAC ratio × (1 + ``margin``).
    """
    f = _ratio(pruned["macs"], original["macs"]) or 1.0
    totals = (original["total_us"], pruned["total_us"])
    ops = [_op_row(op, original["ops"].get(op), pruned["ops"].get(op), f, totals)
           for op in dict.fromkeys([*original["ops"], *pruned["ops"]])]
    ops.append(_op_row(OVERHEAD, {"us": original["overhead_us"], "macs": 0},
                       {"us": pruned["overhead_us"], "macs": 0}, f, totals))
    layers = [_layer_row(name, original["layers"].get(name), pruned["layers"].get(name), margin)
              for name in dict.fromkeys([*original["layers"], *pruned["layers"]])]
    before = {r["node"]: r for r in original["nodes"]}
    after = {r["node"]: r for r in pruned["nodes"]}
    nodes = [{"node": n, "op": (after.get(n) or before[n])["op"],
              "layer": (after.get(n) or before[n])["layer"],
              "original_us": before[n]["us"] if n in before else 0.0,
              "pruned_us": after[n]["us"] if n in after else 0.0}
             for n in dict.fromkeys([*before, *after])]
    comparison = {
        "name": pruned["name"], "reference": original["name"], "mac_fraction": f,
        "mac_speedup": 1.0 / f if f else None, "speedup": _ratio(*totals),
        "time_ratio": _ratio(totals[1], totals[0]),
        "gap_us": totals[1] - f * totals[0], "ops": sorted(ops, key=lambda r: -r["excess_us"]),
        "layers": layers, "nodes": nodes, "margin": margin,
        "kernel_changes": kernel_changes(original, pruned),
    }
    comparison["gap"] = explain_gap(comparison)
    return comparison


def kernel_changes(original: dict, pruned: dict) -> list[dict]:
    """Layers with MACs that run as another op type in the pruned model than in the original
    (e.g. an NCHWc ``Conv`` that became a ``FusedConv``): ``{layer, original_op, pruned_op}``."""
    def op_of(entry: dict) -> dict[str, str]:
        ops: dict[str, str] = {}
        for node in entry["nodes"]:
            if node["layer"] and entry["layers"].get(node["layer"], {}).get("macs"):
                ops.setdefault(node["layer"], node["op"])
        return ops

    before, after = op_of(original), op_of(pruned)
    return [{"layer": layer, "original_op": before[layer], "pruned_op": op}
            for layer, op in after.items() if layer in before and before[layer] != op]


def _op_row(op: str, before: dict | None, after: dict | None, f: float, totals) -> dict:
    o = before["us"] if before else 0.0
    p = after["us"] if after else 0.0
    macs_o, macs_p = (before or {}).get("macs", 0), (after or {}).get("macs", 0)
    return {"op": op, "original_us": o, "pruned_us": p, "time_ratio": _ratio(p, o),
            "mac_ratio": _ratio(macs_p, macs_o) if macs_o else None,
            "share_original": _ratio(o, totals[0]) or 0.0,
            "share_pruned": _ratio(p, totals[1]) or 0.0, "excess_us": p - f * o}


def _layer_row(name: str, before: dict | None, after: dict | None, margin: float) -> dict:
    o = before["us"] if before else 0.0
    p = after["us"] if after else 0.0
    macs_o, macs_p = (before or {}).get("macs", 0), (after or {}).get("macs", 0)
    time_ratio = _ratio(p, o)
    mac_ratio = _ratio(macs_p, macs_o) if macs_o else None
    worse = (time_ratio is not None and mac_ratio is not None
             and time_ratio > mac_ratio * (1.0 + margin))
    return {"layer": name, "original_us": o, "pruned_us": p, "original_macs": macs_o,
            "pruned_macs": macs_p, "time_ratio": time_ratio, "mac_ratio": mac_ratio,
            "worse_than_macs": worse,
            "excess_us": p - (mac_ratio if mac_ratio is not None else 1.0) * o}


def explain_gap(comparison: dict, cover: float = 0.8) -> dict:
    """The op types that account for the gap between the measured speedup and the MAC ratio.

    They are the ops with the largest positive ``excess_us``, taken in order until they cover
    ``cover`` of the summed positive excess, and then every other op whose time grew (by more
    than the comparison's ``margin``) or that runs only in the pruned model, such as a layout
    conversion onnxruntime inserted, and holds at least ``MIN_SHARE`` of the gap; each gets a
    one-line ``reason``. With no gap (the pruned
    model is as fast as its MAC ratio predicts, or faster) ``culprits`` is empty.
    """
    gap = comparison["gap_us"]
    margin = comparison.get("margin", MARGIN)
    positive = sorted((r for r in comparison["ops"] if r["excess_us"] > 0),
                      key=lambda r: -r["excess_us"])
    total = sum(r["excess_us"] for r in positive)
    culprits, covered = [], 0.0
    for row in positive if gap > 0 else []:
        grew = ((row["time_ratio"] is None or row["time_ratio"] > 1.0 + margin)
                and row["excess_us"] >= MIN_SHARE * gap)
        if covered < cover * total or grew:
            culprits.append({**row, "share_of_gap": row["excess_us"] / gap,
                             "reason": gap_reason(row, comparison.get("kernel_changes", []))})
            covered += row["excess_us"]
    return {"gap_us": gap, "speedup": comparison["speedup"],
            "mac_speedup": comparison["mac_speedup"], "culprits": culprits}


def gap_reason(row: dict, changes: list[dict] = ()) -> str:
    """Why one op type's time did not shrink with the MACs, in words; ``changes`` are the
    comparison's ``kernel_changes``."""
    if row["op"] == OVERHEAD:
        return ("per-run work outside the kernels (session, executor, allocations), which does "
                "not shrink with the MACs")
    if not row["original_us"]:
        moved = [c for c in changes if c["pruned_op"] == row["op"]]
        if moved:
            was = ", ".join(sorted({c["original_op"] for c in moved}))
            return (f"runs only in the pruned model: {len(moved)} layer(s) that ran as {was} in "
                    f"the original run as {row['op']}, another onnxruntime kernel "
                    f"({100 * row['share_pruned']:.0f}% of the pruned run)")
        return "runs only in the pruned model (onnxruntime inserted it for the new shapes)"
    share = (f"its share of the run went from {100 * row['share_original']:.0f}% to "
             f"{100 * row['share_pruned']:.0f}%")
    ratio = row["time_ratio"]
    went = (f"its time grew to {100 * ratio:.0f}% of the original" if ratio > 1.0 else
            f"its time fell only to {100 * ratio:.0f}%")
    if row["mac_ratio"] is not None:
        return f"{went} while its MACs fell to {100 * row['mac_ratio']:.0f}%; {share}"
    return f"does no MACs and {went}; {share}"
