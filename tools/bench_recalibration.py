"""Recalibration time and peak RSS against depth: ResNet-18, -34 and -50 (one sweep), with the
old per-layer implementation for comparison where affordable.

Builds ResNet-18/-34 (BasicBlock) and -50 (Bottleneck) in torchvision's layout
(``tools/resnet50.py``) with random weights and random BatchNorm statistics, exports them with the
TorchScript exporter (BatchNorm folded into the convs) at one input size, prunes each to half its
MACs with L1 scores (the ``--method l1`` path of ``compress``), then times ``recalibrate`` on the
same random calibration set:

* ``new``: ``onnxprune.gates.recalibrate.recalibrate``, one sweep in topological order within
  ``--memory-budget``; the time per conv layer shows whether the cost grows linearly with depth;
* ``old``: the per-layer implementation as it was before issue 13 (kept test-only as
  ``tests/gates/recalibrate_reference.py``): reruns the pruned graph over every calibration
  image for every layer, quadratic in depth (``--old-depths``, ResNet-18 only by default).

Both modes are timed: ``reconstruct`` (the default: least squares with a cross-validated ridge)
and ``stats`` (no solves, so the forward passes dominate). Peak RSS is the process's high-water
mark during each call (reset through ``/proc/self/clear_refs`` before it), also as growth over
the RSS before the call. Where the old implementation runs, the records and weights of both are
compared. Writes ``--json`` (default benchmarks/recalibration_depth.json).

    python tools/bench_recalibration.py --size 112 --samples 128 --table /tmp/table.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests" / "gates"))
from resnet50 import RESNETS, export_onnx, randomize_bn  # noqa: E402


def build(depth: int, folder: Path, size: int):
    """(original, pruned, kept) for ResNet-``depth`` at ``size``x``size``, pruned to half."""
    import onnx

    from onnxprune.analysis.groups import analyze_channels
    from onnxprune.graph import ensure_node_names
    from onnxprune.pipeline import kept_channels
    from onnxprune.scores import baseline_scores
    from onnxprune.select import select
    from onnxprune.surgery import prune_model

    net = RESNETS[depth]()
    path = folder / f"resnet{depth}.onnx"
    export_onnx(randomize_bn(net, seed=depth), path, size=size)
    model = onnx.load(str(path))
    ensure_node_names(model)
    analysis = analyze_channels(model)
    selection = select(analysis, baseline_scores("l1", analysis, 0)[0], 0.5)
    return (model, prune_model(model, selection.plan(analysis)),
            kept_channels(analysis, selection.keep), analysis.macs(selection.keep))


def _status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _measured(fn):
    """((wall seconds, CPU seconds of this process), peak RSS MB during the call, RSS MB
    before it, result). The CPU time is what a loaded shared machine distorts least."""
    import gc

    gc.collect()
    try:  # reset the high-water mark (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:
        pass
    before = _status_kb("VmRSS")
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    seconds = (time.perf_counter() - start, time.process_time() - cpu)
    return seconds, _status_kb("VmHWM") / 1024, before / 1024, result


def _max_weight_diff(a, b) -> float:
    from onnx import numpy_helper

    wa = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
    wb = {t.name: numpy_helper.to_array(t) for t in b.graph.initializer}
    return max(float(np.abs(wa[n].astype(np.float64) - wb[n]).max(initial=0.0)) for n in wa)


def bench_depth(depth: int, folder: Path, size: int, x: np.ndarray, modes, with_old: bool,
                budget: int, batch: int = 64, save=None) -> dict:
    """One row; ``save(row)`` after each measurement (partial results survive a kill)."""
    import recalibrate_reference as reference

    from onnxprune.gates.recalibrate import _layers, recalibrate

    model, pruned, kept, macs = build(depth, folder, size)
    convs = sum(n.op_type == "Conv" for n in pruned.graph.node)
    row = {"depth": depth, "layers": len(_layers(pruned)), "convs": convs,
           "pruned_macs": int(macs)}
    for mode in modes:
        (new_s, new_cpu), peak, before, (new_model, new_records) = _measured(
            lambda: recalibrate(model, pruned, x, kept, mode=mode, memory_budget=budget,
                                batch_size=batch))
        row.update({f"{mode}_new_s": round(new_s, 2), f"{mode}_new_cpu_s": round(new_cpu, 2),
                    f"{mode}_new_cpu_s_per_conv": round(new_cpu / convs, 3),
                    f"{mode}_new_s_per_conv": round(new_s / convs, 3),
                    f"{mode}_new_peak_rss_mb": round(peak), f"{mode}_rss_before_mb": round(before),
                    f"{mode}_records": len(new_records)})
        if save:
            save(row)
        print(f"resnet{depth} {mode}: sweep {new_s:.1f} s, CPU {new_cpu:.1f} s "
              f"({new_cpu / convs:.2f} s per conv), "
              f"peak RSS {peak:.0f} MB (before {before:.0f} MB)", flush=True)
        if not with_old:
            continue
        (old_s, old_cpu), old_peak, _, (old_model, old_records) = _measured(
            lambda: reference.recalibrate(model, pruned, x, kept, batch=batch, mode=mode))
        row.update({f"{mode}_old_s": round(old_s, 2), f"{mode}_old_cpu_s": round(old_cpu, 2),
                    f"{mode}_old_peak_rss_mb": round(old_peak),
                    f"{mode}_speedup": round(old_s / new_s, 2),
                    f"{mode}_cpu_speedup": round(old_cpu / new_cpu, 2),
                    f"{mode}_same_records": old_records == new_records,
                    f"{mode}_max_weight_diff": _max_weight_diff(new_model, old_model)})
        if save:
            save(row)
        print(f"resnet{depth} {mode}: per layer {old_s:.1f} s, CPU {old_cpu:.1f} s "
              f"({old_cpu / new_cpu:.1f}x the sweep's CPU), "
              f"same records {old_records == new_records}", flush=True)
    return row


def merge(runs: list[dict]) -> dict:
    """Runs of single depths (run side by side, same settings) as one result, rows by depth."""
    keys = ("input", "calibration_samples", "batch", "memory_budget", "modes")
    if any(run[k] != runs[0][k] for run in runs for k in keys):
        raise SystemExit("bench_recalibration: --merge needs runs with the same settings")
    merged = dict(runs[0])
    merged["rows"] = sorted((r for run in runs for r in run["rows"]), key=lambda r: r["depth"])
    done = [r for r in merged["rows"] if all(f"{m}_new_s" in r for m in merged["modes"])]
    merged.pop("growth", None)
    if len(done) > 1:
        merged["growth"] = growth(done, merged["modes"])
    merged["load"] = "; ".join(f"depth {run['rows'][0]['depth']}: {run['load']}"
                               for run in runs if run["rows"])
    merged["command"] = " & ".join(run["command"] for run in runs) + " (side by side)"
    merged["seconds"] = max(run["seconds"] for run in runs)
    return merged


def growth(rows: list[dict], modes) -> dict:
    """Per mode: time of the deepest over the shallowest model against their ratio of layers."""
    first, last = rows[0], rows[-1]
    out = {"layers_ratio": round(last["convs"] / first["convs"], 2),
           "macs_ratio": round(last["pruned_macs"] / first["pruned_macs"], 2)}
    for mode in modes:
        out[f"{mode}_time_ratio"] = round(last[f"{mode}_new_s"] / first[f"{mode}_new_s"], 2)
        out[f"{mode}_cpu_ratio"] = round(last[f"{mode}_new_cpu_s"] / first[f"{mode}_new_cpu_s"], 2)
    return out


def _load() -> str:
    try:
        return "load average " + " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "load unknown"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depths", default="18,34,50")
    parser.add_argument("--size", type=int, default=112, help="input height and width")
    parser.add_argument("--samples", type=int, default=128, help="calibration images")
    parser.add_argument("--modes", default="reconstruct,stats")
    parser.add_argument("--old-depths", default="18",
                        help="depths also timed with the old per-layer implementation")
    parser.add_argument("--batch", type=int, default=64, help="recalibrate's batch_size")
    parser.add_argument("--memory-budget", default=None, help="recalibrate's budget (e.g. 1G)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "recalibration_depth.json"))
    parser.add_argument("--readme", type=Path, help="rewrite the table between the markers")
    parser.add_argument("--table", type=Path, help="write the Markdown table to this file")
    parser.add_argument("--merge", nargs="+", help="merge these runs (one depth each, same "
                        "settings) into --json and render it")
    parser.add_argument("--from-json", action="store_true",
                        help="only re-render the table of the --json run")
    args = parser.parse_args(argv)
    if args.merge:
        _write_json(Path(args.json), merge([json.loads(Path(p).read_text())
                                            for p in args.merge]))
    if args.from_json or args.merge:
        _render(args, json.loads(Path(args.json).read_text()))
        return 0
    import torch

    from onnxprune.gates.memory import format_size, resolve_budget

    budget = resolve_budget(args.memory_budget)
    x = np.random.default_rng(0).standard_normal(
        (args.samples, 3, args.size, args.size)).astype(np.float32)
    modes = args.modes.split(",")
    old = {int(d) for d in args.old_depths.split(",") if d}
    load_before, started = _load(), time.perf_counter()
    rows: list[dict] = []

    def result() -> dict:
        done = [r for r in rows if all(f"{m}_new_s" in r for m in modes)]
        return {
            "what": "recalibrate() wall time, CPU time and peak RSS against depth: one sweep, "
                    "and the old per-layer implementation where timed",
            "models": "ResNet-18/34 (BasicBlock) and -50 (Bottleneck), torchvision layout "
                      "(tools/resnet50.py), random weights and BN statistics, TorchScript export "
                      "(BN folded), pruned to 0.5 MACs with L1 scores",
            "input": [3, args.size, args.size], "calibration_samples": args.samples,
            "batch": args.batch, "memory_budget": format_size(budget), "modes": modes,
            "rows": rows, **({"growth": growth(done, modes)} if len(done) > 1 else {}),
            "machine": f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                       f"{torch.get_num_threads()} threads; {platform.platform()}",
            "load": f"before: {load_before}; after: {_load()} (machine shared with other jobs)",
            "seconds": round(time.perf_counter() - started, 1),
            "command": "python tools/bench_recalibration.py " + " ".join(
                sys.argv[1:] if argv is None else argv)}

    def save(row: dict) -> None:
        if row not in rows:
            rows.append(row)
        _write_json(Path(args.json), result())

    with tempfile.TemporaryDirectory() as folder:
        for d in args.depths.split(","):
            save(bench_depth(int(d), Path(folder), args.size, x, modes, int(d) in old, budget,
                             args.batch, save))
    print(json.dumps(rows, indent=1))
    _render(args, result())
    return 0


def cpu_model() -> str:
    try:
        from onnxprune.runtime.bench import cpu_model as model

        return model()
    except Exception:  # noqa: BLE001 - only a label
        return platform.processor() or platform.machine()


def _write_json(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _render(args, result: dict) -> None:
    text = table(result)
    if args.table:
        args.table.write_text(text + "\n", encoding="utf-8")
    if args.readme:
        write_readme(args.readme, text)


MARK = ("<!-- recalibration-table -->", "<!-- /recalibration-table -->")


def _cell(row: dict, mode: str) -> str:
    """CPU seconds where measured (wall seconds in older runs), per conv, and the old one's."""
    if f"{mode}_new_s" not in row:
        return "not measured"
    key = "cpu_s" if f"{mode}_new_cpu_s" in row else "s"
    speedup = "cpu_speedup" if key == "cpu_s" else "speedup"
    cell = f"{row[f'{mode}_new_{key}']:.1f} s"
    if f"{mode}_new_{key}_per_conv" in row:
        cell += f" ({row[f'{mode}_new_{key}_per_conv']:.2f} s/conv)"
    if f"{mode}_old_{key}" in row:
        cell += f"; per layer {row[f'{mode}_old_{key}']:.1f} s ({row[f'{mode}_{speedup}']:.1f}×)"
    return cell


def table(result: dict) -> str:
    """The Markdown table of a run: seconds (and per conv) per depth and mode, the per-layer
    reference where timed, peak RSS of the default mode's sweep."""
    modes = result["modes"]
    rss = [m for m in modes if f"{m}_new_peak_rss_mb" in result["rows"][0]][:1]
    lines = [f"Machine: {result['machine']}; {result['load'] + '; ' if 'load' in result else ''}input {result['input']}, "
             f"{result['calibration_samples']} calibration images, batch {result['batch']}"
             + (f", memory budget {result['memory_budget']}" if "memory_budget" in result
                else "") + ".", "",
             "| model | convs | pruned MMACs | " + " | ".join(
                 f"{m}: sweep ({'CPU' if f'{m}_new_cpu_s' in result['rows'][0] else 'wall'})"
                 for m in modes)
             + "".join(f" | peak RSS ({m})" for m in rss) + " |",
             "|---|---|---|" + "---|" * (len(modes) + len(rss))]
    for row in result["rows"]:
        cells = [_cell(row, m) for m in modes]
        cells += [f"{row[f'{m}_new_peak_rss_mb']} MB (from {row[f'{m}_rss_before_mb']} MB)"
                  for m in rss]
        macs = f"{row['pruned_macs'] / 1e6:.0f}" if "pruned_macs" in row else "-"
        lines.append(f"| ResNet-{row['depth']} | {row['convs']} | {macs} | "
                     + " | ".join(cells) + " |")
    if "growth" in result:
        g = result["growth"]
        lines += ["", f"ResNet-{result['rows'][-1]['depth']} over ResNet-"
                  f"{result['rows'][0]['depth']}: {g['layers_ratio']}× the convs, "
                  f"{g['macs_ratio']}× the MACs; "
                  + ", ".join(f"{m} {g.get(f'{m}_cpu_ratio', g[f'{m}_time_ratio'])}× the "
                              f"{'CPU ' if f'{m}_cpu_ratio' in g else ''}time" for m in modes)
                  + "."]
    return "\n".join(lines)


def write_readme(path: Path, text: str) -> None:
    readme = path.read_text(encoding="utf-8")
    start, end = readme.index(MARK[0]) + len(MARK[0]), readme.index(MARK[1])
    path.write_text(readme[:start] + "\n" + text + "\n" + readme[end:], encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
