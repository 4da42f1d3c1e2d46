"""Analysis + surgery time against plain ``onnx.load + onnx.save`` on a ResNet-50-sized graph.

Builds torchvision's ResNet-50 architecture in torch (bottlenecks [3, 4, 6, 3], widths 64..2048,
random weights, input 1x3x224x224), exports it with the TorchScript exporter (opset 17) to a
temporary folder, then times (median of ``--repeats``):

* baseline: ``onnx.load`` + ``onnx.save``
* onnxprune: ``graph.load_model`` + ``analyze_channels`` + ``prune_model`` (a random half plan)
  + ``graph.save_model``

and prints / writes (``--json OUT``) both times and their ratio (target: ratio <= 3).
``--profile N`` prints the N hottest functions of one onnxprune run (cProfile).

    python tools/bench_surgery.py --repeats 3 --json bench_surgery.json
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from resnet50 import resnet50  # noqa: E402  (tools/resnet50.py: torchvision's architecture)


def export(folder: Path) -> Path:
    import torch

    path = folder / "resnet50.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(resnet50().eval(), (torch.randn(1, 3, 224, 224),), str(path), dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["logits"])
    return path


def half_plan(analysis, seed: int = 0) -> dict[str, list[int]]:
    rng = np.random.default_rng(seed)
    return {g.id: sorted(rng.choice(g.channels, max(1, g.channels // 2), replace=False).tolist())
            for g in analysis.groups if g.prunable}


def baseline(src: Path, dst: Path) -> float:
    import onnx

    start = time.perf_counter()
    onnx.save(onnx.load(str(src)), str(dst))
    return time.perf_counter() - start


def onnxprune_run(src: Path, dst: Path) -> tuple[float, dict]:
    from onnxprune.analysis.groups import analyze_channels
    from onnxprune.graph import load_model, save_model
    from onnxprune.surgery import prune_model

    start = time.perf_counter()
    model = load_model(src).model
    analysis = analyze_channels(model)
    keep = half_plan(analysis)
    pruned = prune_model(model, keep, analysis=analysis)
    save_model(pruned, dst)
    elapsed = time.perf_counter() - start
    return elapsed, {"groups": len(analysis.groups), "prunable_groups": len(keep),
                     "macs_before": analysis.macs(), "pruned_bytes": dst.stat().st_size}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", dest="json_out", help="Write the result as JSON here.")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="Print the N hottest functions of one onnxprune run.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-surgery-") as tmp:
        folder = Path(tmp)
        src = export(folder)
        base = [baseline(src, folder / "copy.onnx") for _ in range(args.repeats)]
        runs = [onnxprune_run(src, folder / "pruned.onnx") for _ in range(args.repeats)]
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(onnxprune_run, src, folder / "pruned.onnx")
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(args.profile)
            print(text.getvalue(), file=sys.stderr)
        result = {
            "model": "resnet50 (torchvision architecture, random weights, 1x3x224x224)",
            "model_bytes": src.stat().st_size,
            "repeats": args.repeats,
            "load_save_s": statistics.median(base),
            "analysis_surgery_s": statistics.median(r[0] for r in runs),
            **runs[-1][1],
        }
        result["ratio"] = result["analysis_surgery_s"] / result["load_save_s"]
        result["target_ratio"] = 3.0
        result["within_target"] = result["ratio"] <= 3.0
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
