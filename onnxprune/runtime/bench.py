"""Latency benchmark in ONNX Runtime: warm-up, interleaved runs, percentiles, speedup vs MACs.

``bench_models`` returns one JSON-ready dict with stable keys:

- ``onnxruntime``: ORT version; ``requested_provider``; ``available_providers``
- ``provider``: the provider every session really ran on (a CPU fallback is never a GPU figure)
- ``machine``: ``{cpu, gpu, cpu_count, threads}`` (``threads`` null = ORT's default)
- ``settings``: ``{batches, warmup, iterations, duration, io_binding, seed}``
- ``models``: a list, one entry per model in the given order:
  ``{name, provider, macs, mac_ratio, latency, speedup}`` where ``latency`` maps each batch size
  (as a string) to ``{batch, iterations, mean_ms, p50_ms, p90_ms, p99_ms, min_ms, throughput}``
  (throughput in samples/s), ``speedup`` maps each batch size to ``{p50, mean}`` — the first
  model's latency divided by this model's (1.0 for the first) — and ``mac_ratio`` is
  ``macs(first) / macs(this)`` (null when MACs cannot be counted)
- ``min_speedup``: the gate or null; ``passed``; ``failures``: one message per model and batch
  whose p50 speedup is below ``min_speedup``

With several models the runs are interleaved: every iteration runs each model once, in an order
that alternates (forward, then reversed), so slow drift of the machine hits all models alike.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time

import numpy as np

from onnxprune.errors import OnnxPruneError
from onnxprune.runtime.session import (
    CUDA,
    ModelLike,
    RuntimeSession,
    available_providers,
    create_session,
    model_proto,
    numpy_dtype,
    ort_version,
)

DEFAULT_ITERATIONS = 50
SEED = 0


def bench_models(
    models: list[ModelLike],
    provider: str = "auto",
    batches: tuple[int, ...] = (1,),
    warmup: int = 10,
    iterations: int | None = None,
    duration: float | None = None,
    threads: int | None = None,
    min_speedup: float | None = None,
    names: list[str] | None = None,
    input_shapes: dict | None = None,
) -> dict:
    """Benchmark ``models`` (paths or ModelProtos); see the module docstring for the keys.

    ``input_shapes`` ({input name: dims}, ``--input-shape``) sizes dynamic non-batch dims.

    ``duration`` (seconds) replaces ``iterations``: each batch size runs until about
    ``duration`` seconds per model have passed (at least one iteration).
    """
    _check_args(models, batches, warmup, iterations, duration, min_speedup)
    if iterations is None and duration is None:
        iterations = DEFAULT_ITERATIONS
    protos = [model_proto(m) for m in models]
    names = list(names) if names else [label for _, label, _ in protos]
    sessions = [create_session(p, provider, threads, n) for (p, _, _), n in zip(protos, names)]
    used = {s.provider for s in sessions}
    if len(used) != 1:
        raise OnnxPruneError(f"sessions ran on different providers ({', '.join(sorted(used))}); refusing to compare")
    on_cuda = sessions[0].provider == CUDA
    entries = [_model_entry(s, p, input_shapes) for s, (p, _, _) in zip(sessions, protos)]
    for batch in batches:
        runners = [_runner(s, batch, "cuda" if on_cuda else None, input_shapes)
                   for s in sessions]
        times = _measure(runners, warmup, iterations, duration)
        for entry, samples in zip(entries, times):
            entry["latency"][str(batch)] = latency_stats(samples, batch)
    _speedups(entries, batches)
    failures = speedup_failures(entries, batches, min_speedup)
    return {
        "onnxruntime": ort_version(),
        "requested_provider": provider,
        "available_providers": available_providers(),
        "provider": sessions[0].provider,
        "machine": machine_info(on_cuda, threads),
        "settings": {
            "batches": list(batches), "warmup": warmup, "iterations": iterations,
            "duration": duration, "io_binding": on_cuda, "seed": SEED,
        },
        "models": entries,
        "min_speedup": min_speedup,
        "passed": not failures,
        "failures": failures,
    }


def _check_args(models, batches, warmup, iterations, duration, min_speedup) -> None:
    if not models:
        raise OnnxPruneError("bench needs at least one model")
    if not batches or any(int(b) < 1 for b in batches):
        raise OnnxPruneError(f"batch sizes must be positive integers, got {list(batches)}")
    if warmup < 0:
        raise OnnxPruneError(f"--warmup must be >= 0, got {warmup}")
    if iterations is not None and duration is not None:
        raise OnnxPruneError("give either --iterations or --duration, not both")
    if iterations is not None and iterations < 1:
        raise OnnxPruneError(f"--iterations must be at least 1, got {iterations}")
    if duration is not None and not duration > 0:
        raise OnnxPruneError(f"--duration must be positive seconds, got {duration}")
    if min_speedup is not None:
        if len(models) < 2:
            raise OnnxPruneError("--min-speedup needs at least two models (speedup is vs the first)")
        if not min_speedup > 0:
            raise OnnxPruneError(f"--min-speedup must be positive, got {min_speedup}")


def _model_entry(rs: RuntimeSession, proto, input_shapes=None) -> dict:
    from onnxprune.analysis.summary import count_macs

    try:
        macs = int(count_macs(proto, input_shapes=input_shapes))
    except OnnxPruneError:
        macs = None  # e.g. shapes inference cannot resolve; latency is still measured
    return {"name": rs.name, "provider": rs.provider, "macs": macs, "mac_ratio": None,
            "latency": {}, "speedup": {}}


def random_inputs(rs: RuntimeSession, batch: int, seed: int = SEED,
                  input_shapes: dict | None = None) -> dict[str, np.ndarray]:
    """Random feeds of each input's shape, the dynamic batch dim set to ``batch``, other
    dynamic dims from ``input_shapes`` ({name: dims}; a bare '' entry names the only input)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    inputs = rs.session.get_inputs()
    given = dict(input_shapes or {})
    if "" in given and len(inputs) == 1:
        given[inputs[0].name] = given.pop("")
    for value in inputs:
        shape = []
        override = given.get(value.name)
        for axis, dim in enumerate(value.shape or []):
            if axis > 0 and override is not None and axis < len(override) and not (
                    isinstance(dim, int) and dim > 0):
                shape.append(int(override[axis]))
                continue
            if isinstance(dim, int) and dim > 0:
                if axis == 0 and dim != batch:
                    raise OnnxPruneError(
                        f"{rs.name}: input '{value.name}' has a static batch size {dim}; "
                        f"cannot benchmark batch {batch}"
                    )
                shape.append(dim)
            elif axis == 0:
                shape.append(batch)
            else:
                raise OnnxPruneError(
                    f"{rs.name}: input '{value.name}' has a dynamic dimension '{dim}' at axis {axis}; "
                    f"give its size with --input-shape {value.name}:D0,D1,..."
                )
        dtype = numpy_dtype(value.type)
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[value.name] = rng.integers(0, 2, shape).astype(np.bool_)
        else:
            feeds[value.name] = rng.integers(0, 10, shape).astype(dtype)
    return feeds


def io_binding(rs: RuntimeSession, feeds: dict[str, np.ndarray], device: str):
    """An ``IOBinding`` with ``feeds`` copied to ``device`` once and outputs left there."""
    import onnxruntime

    binding = rs.session.io_binding()
    for name, array in feeds.items():
        binding.bind_ortvalue_input(name, onnxruntime.OrtValue.ortvalue_from_numpy(array, device, 0))
    for out in rs.session.get_outputs():
        binding.bind_output(out.name, device)
    return binding


def _runner(rs: RuntimeSession, batch: int, bind_device: str | None, input_shapes=None):
    """A no-argument callable running one inference.

    ``bind_device`` "cuda" binds inputs and outputs on the GPU (I/O binding) so host copies stay
    out of the figure; None is a plain ``run`` with numpy feeds.
    """
    feeds = random_inputs(rs, batch, input_shapes=input_shapes)
    session = rs.session
    if bind_device is None:
        return lambda: session.run(None, feeds)
    binding = io_binding(rs, feeds, bind_device)
    return lambda: session.run_with_iobinding(binding)


def _measure(runners, warmup: int, iterations: int | None, duration: float | None) -> list[list[float]]:
    """Per-runner latencies in ms; runs interleaved, order alternating every iteration."""
    order = list(range(len(runners)))
    try:
        for i in range(warmup):
            for k in (order if i % 2 == 0 else order[::-1]):
                runners[k]()
        times: list[list[float]] = [[] for _ in runners]
        budget = None if duration is None else duration * len(runners)
        start = time.perf_counter()
        i = 0
        while True:
            for k in (order if i % 2 == 0 else order[::-1]):
                t0 = time.perf_counter()
                runners[k]()
                times[k].append((time.perf_counter() - t0) * 1000.0)
            i += 1
            if iterations is not None and i >= iterations:
                break
            if budget is not None and time.perf_counter() - start >= budget:
                break
    except OnnxPruneError:
        raise
    except Exception as exc:
        raise OnnxPruneError(f"inference failed during the benchmark ({' '.join(str(exc).split())[:300]})") from None
    return times


def latency_stats(samples_ms: list[float], batch: int) -> dict:
    """mean/p50/p90/p99/min in ms and throughput (samples/s) of one model at one batch size."""
    arr = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = (float(v) for v in np.percentile(arr, [50, 90, 99]))
    mean = float(arr.mean())
    return {
        "batch": int(batch),
        "iterations": int(arr.size),
        "mean_ms": mean,
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "min_ms": float(arr.min()),
        "throughput": batch * 1000.0 / mean if mean > 0 else None,
    }


def _speedups(entries: list[dict], batches) -> None:
    first = entries[0]
    for entry in entries:
        if first["macs"] and entry["macs"]:
            entry["mac_ratio"] = first["macs"] / entry["macs"]
        for batch in batches:
            ref, own = first["latency"][str(batch)], entry["latency"][str(batch)]
            entry["speedup"][str(batch)] = {
                "p50": ref["p50_ms"] / own["p50_ms"] if own["p50_ms"] > 0 else None,
                "mean": ref["mean_ms"] / own["mean_ms"] if own["mean_ms"] > 0 else None,
            }


def speedup_failures(entries: list[dict], batches, min_speedup: float | None) -> list[str]:
    """One message per model (after the first) and batch whose p50 speedup is below the gate."""
    if min_speedup is None:
        return []
    failures = []
    for entry in entries[1:]:
        for batch in batches:
            value = entry["speedup"][str(batch)]["p50"]
            if value is None or value < min_speedup:
                failures.append(
                    f"{entry['name']} at batch {batch}: p50 speedup {value or 0:.2f}x vs "
                    f"{entries[0]['name']} is below --min-speedup {min_speedup}"
                )
    return failures


def machine_info(on_cuda: bool, threads: int | None) -> dict:
    """CPU model, GPU name (when on CUDA), CPU count and the intra-op threads asked for."""
    return {
        "cpu": cpu_model(),
        "gpu": gpu_name() if on_cuda else None,
        "cpu_count": os.cpu_count(),
        "threads": threads,
    }


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform's best guess."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def gpu_name() -> str | None:
    """The first GPU's name from nvidia-smi, when present."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    return names[0] if done.returncode == 0 and names else None


def format_bench(result: dict) -> str:
    """Human-readable table of ``bench_models``' result."""
    machine = result["machine"]
    threads = machine["threads"] if machine["threads"] is not None else "default"
    lines = [
        f"onnxruntime {result['onnxruntime']}  provider {result['provider']}"
        f"{'  (I/O binding on the GPU)' if result['settings']['io_binding'] else ''}",
        f"cpu: {machine['cpu']} ({machine['cpu_count']} cores, threads {threads})"
        + (f"  gpu: {machine['gpu']}" if machine["gpu"] else ""),
        "",
    ]
    width = max(len("model"), *(len(m["name"]) for m in result["models"]))
    header = (f"{'model':<{width}}  {'batch':>5}  {'p50 ms':>9}  {'p90 ms':>9}  {'p99 ms':>9}  "
              f"{'mean ms':>9}  {'samples/s':>10}  {'speedup p50':>11}  {'MAC ratio':>9}")
    lines.append(header)
    for batch in result["settings"]["batches"]:
        for m in result["models"]:
            lat, speed = m["latency"][str(batch)], m["speedup"][str(batch)]
            ratio = f"{m['mac_ratio']:.2f}x" if m["mac_ratio"] is not None else "-"
            p50 = f"{speed['p50']:.2f}x" if speed["p50"] is not None else "-"
            tput = f"{lat['throughput']:.1f}" if lat["throughput"] is not None else "-"
            lines.append(
                f"{m['name']:<{width}}  {batch:>5}  {lat['p50_ms']:>9.3f}  {lat['p90_ms']:>9.3f}  "
                f"{lat['p99_ms']:>9.3f}  {lat['mean_ms']:>9.3f}  {tput:>10}  {p50:>11}  {ratio:>9}"
            )
    if result["min_speedup"] is not None:
        lines.append("")
        lines.append("PASSED" if result["passed"] else "FAILED: " + "; ".join(result["failures"]))
    return "\n".join(lines)
