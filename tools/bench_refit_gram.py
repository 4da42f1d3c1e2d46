"""Benchmark: the refit scores' Gram accumulation (``refit_select._collect``) in float32 against
float64 per batch, on the same model, images and rows, alternating in one run.

``_collect`` runs the original model over the calibration images and accumulates every reading
layer's XᵀX from at most ``MAX_ROWS`` im2col rows per batch of 64; it is most of a refit round
at 224x224 (issue 13). The batch sums are float64 either way; ``GRAM_DTYPE`` is the dtype of
one batch's product. Also recorded: the largest relative difference of the two H, and the time
of the Fisher pass that ``--refit-weighting fisher|auto`` adds (``refit_fisher.collect_fisher``,
forward and backward in batches of ``FISHER_BATCH``) over the same images.

    python tools/bench_refit_gram.py --model resnet50 --images 128 --json benchmarks/refit_gram_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scale import MODELS, build_model  # noqa: E402


def collect_seconds(model, analysis, x, dtype) -> tuple[float, list]:
    """Wall time of one ``_collect`` over ``x`` with one batch's product in ``dtype``."""
    from onnxprune.gates import refit_select

    layers = refit_select._reading_layers(analysis)
    refit_select.GRAM_DTYPE = dtype
    try:
        started = time.perf_counter()
        refit_select._collect(model, layers, x, 64, "cpu")
        seconds = time.perf_counter() - started
    finally:
        refit_select.GRAM_DTYPE = torch.float32
    return seconds, [layer.gram for layer in layers]


def main(argv=None) -> int:
    from onnxprune.analysis.groups import analyze_channels
    from onnxprune.graph import ensure_node_names

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50", choices=sorted(MODELS))
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default="/tmp/onnxprune_bench_scale")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = build_model(args.model, Path(args.work))
    model = onnx.load_model(str(path))
    ensure_node_names(model)
    analysis = analyze_channels(model)
    size = MODELS[args.model][1]
    x = np.random.default_rng(0).standard_normal((args.images, 3, size, size)).astype(np.float32)
    times = {"float64": [], "float32": []}
    grams = {}
    for _ in range(args.repeats):
        for name, dtype in (("float64", torch.float64), ("float32", torch.float32)):
            seconds, grams[name] = collect_seconds(model, analysis, x, dtype)
            times[name].append(round(seconds, 2))
            print(f"{name}: {seconds:.1f} s", file=sys.stderr, flush=True)
    from onnxprune.gates.refit_fisher import FISHER_BATCH, collect_fisher
    from onnxprune.gates.refit_select import _reading_layers

    started = time.perf_counter()
    collect_fisher(model, _reading_layers(analysis), x, FISHER_BATCH, "cpu")
    fisher_seconds = round(time.perf_counter() - started, 2)
    print(f"fisher pass: {fisher_seconds:.1f} s", file=sys.stderr, flush=True)
    diff = max(float((a - b).abs().max() / a.abs().max().clamp_min(1e-30))
               for a, b in zip(grams["float64"], grams["float32"]))
    result = {
        "benchmark": "refit Gram accumulation, float32 vs float64 per batch",
        "model": args.model, "input": [3, size, size], "images": args.images, "batch": 64,
        "reading_layers": len(grams["float64"]), "seconds": times,
        "ratio_float64_over_float32": round(min(times["float64"]) / min(times["float32"]), 3),
        "max_relative_difference_of_H": diff,
        "fisher_pass_seconds": fisher_seconds, "fisher_batch": FISHER_BATCH,
        "fisher_pass_over_float32_gram": round(fisher_seconds / min(times["float32"]), 3),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": args.threads, "load_average": os.getloadavg()},
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__},
        "command": "python tools/bench_refit_gram.py " + " ".join(
            sys.argv[1:] if argv is None else argv),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        tmp = Path(args.json).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
