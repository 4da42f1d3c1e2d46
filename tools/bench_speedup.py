"""Benchmark: measured speedup of pruned models vs their MAC ratio (ONNX Runtime, CPU).

For the MNIST reference models (``models/{vgg,resnet,mobilenetv2}.onnx``) and for torchvision's
ResNet-50 and MobileNetV2 (built in code by ``tools/resnet50.py``, random weights, exported with
the TorchScript exporter, opset 17, dynamic batch, input 3x224x224), prune to each ``--targets``
MAC fraction with the ``l1`` baseline scores through the one selection (``select``), once with
``round_to=1`` and once with ``round_to=8``, and time original and pruned models interleaved in
one ``bench_models`` call per model (so drift of a shared machine hits all of them alike).

For each pruned model: the MAC fraction kept, the measured p50 speedup per batch size and the
realized share of the theoretical speedup, speedup / (1 / MAC fraction).

    python tools/bench_speedup.py --json benchmarks/speedup_cpu.json
    python tools/bench_speedup.py --quick          # a smoke run, few iterations
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from onnxprune.analysis.groups import analyze_channels  # noqa: E402
from onnxprune.analysis.summary import count_macs  # noqa: E402
from onnxprune.runtime.bench import bench_models  # noqa: E402
from onnxprune.scores import baseline_scores  # noqa: E402
from onnxprune.select import select  # noqa: E402
from onnxprune.surgery import prune_model  # noqa: E402

MNIST = ("vgg", "resnet", "mobilenetv2")
IMAGENET = ("resnet50", "mobilenet_v2")
ALL = MNIST + IMAGENET
GATE_MODEL, GATE_TARGET, GATE_BATCH, GATE_SPEEDUP = "resnet50", 0.5, 32, 1.6


def build_model(name: str, workdir: Path) -> onnx.ModelProto:
    """The ONNX model ``name``: a reference MNIST file, or exported from tools/resnet50.py."""
    if name in MNIST:
        return onnx.load(str(ROOT / "models" / f"{name}.onnx"))
    import torch

    import resnet50 as arch

    torch.manual_seed(0)
    module = arch.resnet50() if name == "resnet50" else arch.mobilenet_v2()
    arch.randomize_bn(module, seed=0)  # BN folds into the convs: per-channel scales differ
    path = workdir / f"{name}.onnx"
    arch.export_onnx(module, path, size=224)
    return onnx.load(str(path))


def prune_variants(model: onnx.ModelProto, targets, round_tos) -> list[dict]:
    """One pruned model per (target, round_to), all from the same ``l1`` scores."""
    analysis = analyze_channels(model)
    scores, _ = baseline_scores("l1", analysis)
    variants = []
    for target in targets:
        for round_to in round_tos:
            sel = select(analysis, scores, target, round_to=round_to)
            pruned = prune_model(model, sel.plan(analysis))
            kept = {g.id: int(sel.keep[g.offset:g.offset + g.channels].sum())
                    for g in analysis.groups if g.prunable}
            channels = {g.id: g.channels for g in analysis.groups if g.prunable}
            variants.append({
                "target": target, "round_to": round_to, "model": pruned,
                "kept": kept, "channels": channels,
                "macs_selected": sel.macs, "macs_before": sel.macs_before,
            })
    return variants


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


def ort_optimized_ops(model: onnx.ModelProto, workdir: Path, tag: str) -> dict[str, int]:
    """Op counts of the graph ONNX Runtime really runs on the CPU (default optimizations, i.e.
    ORT_ENABLE_ALL with the NCHWc layout transformer): a conv whose channel counts do not fit
    the NCHWc block stays a plain Conv/FusedConv with Reorder ops around it."""
    import onnxruntime

    src, dst = workdir / f"{tag}.onnx", workdir / f"{tag}.opt.onnx"
    onnx.save(model, str(src))
    options = onnxruntime.SessionOptions()
    options.optimized_model_filepath = str(dst)
    options.log_severity_level = 3
    onnxruntime.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(dst))
    counts = Counter(f"{n.domain}:{n.op_type}" if n.domain else n.op_type for n in optimized.graph.node)
    src.unlink()
    dst.unlink()
    return dict(sorted(counts.items()))


def run_one(name: str, workdir: Path, args) -> dict:
    t0 = time.perf_counter()
    model = build_model(name, workdir)
    batches = tuple(args.mnist_batches) if name in MNIST else tuple(args.imagenet_batches)
    variants = prune_variants(model, args.targets, args.round_to)
    prep_s = time.perf_counter() - t0
    labels = ["original"] + [f"t{v['target']}_r{v['round_to']}" for v in variants]
    iterations = args.iterations if args.iterations else (
        (args.quick_iterations_mnist if name in MNIST else args.quick_iterations_imagenet) if args.quick
        else (args.iterations_mnist if name in MNIST else args.iterations_imagenet))
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    t1 = time.perf_counter()
    result = bench_models([model] + [v["model"] for v in variants], provider="cpu",
                          batches=batches, warmup=warmup, iterations=iterations,
                          threads=args.threads, names=labels)
    bench_s = time.perf_counter() - t1
    macs_before = count_macs(model)
    original_ops = op_counts(model)
    ort_ops = [ort_optimized_ops(model, workdir, f"{name}_original")] + [
        ort_optimized_ops(v["model"], workdir, f"{name}_{label}") for v, label in zip(variants, labels[1:])]
    rows = []
    entries = result["models"]
    for label, entry, variant, ort_op in zip(labels, entries, [None] + variants, ort_ops):
        macs = entry["macs"]
        fraction = macs / macs_before
        row = {
            "model": name, "variant": label,
            "target": variant["target"] if variant else 1.0,
            "round_to": variant["round_to"] if variant else None,
            "macs": macs, "mac_fraction": fraction,
            "theoretical_speedup": 1.0 / fraction,
            "latency": {b: {k: entry["latency"][b][k] for k in ("p50_ms", "p90_ms", "mean_ms", "min_ms",
                                                                "iterations")}
                        for b in entry["latency"]},
            "speedup_p50": {b: entry["speedup"][b]["p50"] for b in entry["speedup"]},
            "realized": {b: entry["speedup"][b]["p50"] * fraction for b in entry["speedup"]},
            "ort_optimized_ops": ort_op,
            "convs_nchwc": ort_op.get("com.microsoft.nchwc:Conv", 0),
            "convs_not_nchwc": sum(v for k, v in ort_op.items() if k in ("Conv", "com.microsoft:FusedConv")),
        }
        if variant:
            kept, channels = variant["kept"], variant["channels"]
            row["macs_selected"] = variant["macs_selected"]
            row["groups_pruned"] = sum(kept[g] < channels[g] for g in kept)
            row["groups_not_multiple_of_8"] = sorted(g for g in kept if kept[g] % 8)
            row["kept_channels"] = {g: [kept[g], channels[g]] for g in kept}
            ops = op_counts(variant["model"])
            row["ops_changed"] = {k: [original_ops.get(k, 0), ops.get(k, 0)]
                                  for k in sorted(set(ops) | set(original_ops))
                                  if ops.get(k, 0) != original_ops.get(k, 0)}
        rows.append(row)
    return {"model": name, "batches": list(batches), "warmup": warmup, "iterations": iterations,
            "prepare_s": round(prep_s, 1), "bench_s": round(bench_s, 1), "macs_before": macs_before,
            "bench": {k: result[k] for k in ("onnxruntime", "provider", "machine", "settings")},
            "rows": rows}


def round_to_effect(rows: list[dict]) -> list[dict]:
    """For each target and batch: speedup with round_to=8 divided by speedup with round_to=1."""
    out = []
    by_key = {(r["target"], r["round_to"]): r for r in rows if r["round_to"] is not None}
    for (target, rt), row in by_key.items():
        if rt == 1 or (target, 1) not in by_key:
            continue
        base = by_key[(target, 1)]
        for b in row["speedup_p50"]:
            out.append({"target": target, "round_to": rt, "batch": int(b),
                        "speedup_r1": base["speedup_p50"][b], f"speedup_r{rt}": row["speedup_p50"][b],
                        "ratio": row["speedup_p50"][b] / base["speedup_p50"][b],
                        "mac_fraction_r1": base["mac_fraction"], f"mac_fraction_r{rt}": row["mac_fraction"]})
    return out


def markdown(models: list[dict]) -> str:
    lines = ["| model | target | round_to | MAC fraction | batch | p50 ms | speedup p50 | "
             "theoretical (1/MAC) | realized | convs NCHWc / plain |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for m in models:
        for row in m["rows"]:
            for b in row["latency"]:
                lines.append(
                    f"| {row['model']} | {row['target']:g} | {row['round_to'] or '-'} | "
                    f"{row['mac_fraction']:.3f} | {b} | {row['latency'][b]['p50_ms']:.2f} | "
                    f"{row['speedup_p50'][b]:.2f}x | {row['theoretical_speedup']:.2f}x | "
                    f"{row['realized'][b]:.0%} | {row['convs_nchwc']}/{row['convs_not_nchwc']} |")
    return "\n".join(lines)


def machine(threads) -> dict:
    import onnxruntime

    from onnxprune.runtime.bench import cpu_model

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "cpu_affinity": affinity,
            "load_average_at_start": load, "onnxruntime": onnxruntime.__version__,
            "provider": "CPUExecutionProvider",
            "intra_op_threads": threads if threads is not None else "onnxruntime default",
            "graph_optimization": "onnxruntime default (ORT_ENABLE_ALL, NCHWc layout on x86)",
            "python": sys.version.split()[0], "gpu": None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the results here (e.g. benchmarks/speedup_cpu.json)")
    ap.add_argument("--quick", action="store_true", help="few iterations: a smoke run")
    ap.add_argument("--models", nargs="+", default=list(ALL), choices=ALL)
    ap.add_argument("--targets", nargs="+", type=float, default=[0.5, 0.25])
    ap.add_argument("--round-to", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--imagenet-batches", nargs="+", type=int, default=[32])
    ap.add_argument("--mnist-batches", nargs="+", type=int, default=[1, 64])
    ap.add_argument("--iterations", type=int, help="timed iterations per model (overrides defaults)")
    ap.add_argument("--iterations-imagenet", type=int, default=10)
    ap.add_argument("--iterations-mnist", type=int, default=200)
    ap.add_argument("--quick-iterations-imagenet", type=int, default=3)
    ap.add_argument("--quick-iterations-mnist", type=int, default=20)
    ap.add_argument("--warmup", type=int, help="untimed interleaved rounds (default 3, quick 1)")
    ap.add_argument("--threads", type=int, help="ORT intra-op threads (default: ORT's own)")
    args = ap.parse_args(argv)

    results = []
    with tempfile.TemporaryDirectory(prefix="bench_speedup_") as tmp:
        for name in args.models:
            print(f"[{name}] preparing and benchmarking ...", file=sys.stderr, flush=True)
            res = run_one(name, Path(tmp), args)
            res["round_to_effect"] = round_to_effect(res["rows"])
            print(f"[{name}] prepared in {res['prepare_s']} s, benchmarked in {res['bench_s']} s",
                  file=sys.stderr, flush=True)
            results.append(res)

    gate = None
    for res in results:
        if res["model"] != GATE_MODEL:
            continue
        for row in res["rows"]:
            if row["target"] == GATE_TARGET and str(GATE_BATCH) in row["speedup_p50"]:
                value = row["speedup_p50"][str(GATE_BATCH)]
                gate = gate or []
                gate.append({"round_to": row["round_to"], "speedup_p50": value,
                             "passed": value >= GATE_SPEEDUP})
    table = markdown(results)
    print(table)
    print()
    for res in results:
        for eff in res["round_to_effect"]:
            print(f"{res['model']}: target {eff['target']:g} batch {eff['batch']}: round_to="
                  f"{eff['round_to']} speedup / round_to=1 speedup = {eff['ratio']:.3f}")
    if gate is not None:
        print()
        for g in gate:
            print(f"acceptance: {GATE_MODEL} @ {GATE_TARGET} MACs, batch {GATE_BATCH}, round_to "
                  f"{g['round_to']}: p50 speedup {g['speedup_p50']:.2f}x "
                  f"({'>=' if g['passed'] else '<'} {GATE_SPEEDUP}x)")
    out = {"machine": machine(args.threads), "quick": args.quick,
           "settings": {"targets": args.targets, "round_to": args.round_to, "scores": "l1",
                        "imagenet_batches": args.imagenet_batches,
                        "mnist_batches": args.mnist_batches},
           "acceptance": {"model": GATE_MODEL, "target": GATE_TARGET, "batch": GATE_BATCH,
                          "min_speedup": GATE_SPEEDUP, "results": gate},
           "models": results, "table_markdown": table}
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = path.with_suffix(path.suffix + ".tmp")
        tmp_path.write_text(json.dumps(out, indent=1) + "\n")
        os.replace(tmp_path, path)
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
