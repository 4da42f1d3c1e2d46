"""Recalibration wall time against depth: the one-sweep implementation vs the old per-layer one.

Builds ResNet-18, -34 (BasicBlocks [2, 2, 2, 2] / [3, 4, 6, 3]) and -50 (torchvision's
Bottleneck architecture, ``tools/resnet50.py``) with random weights and random BatchNorm
statistics, exports them with the TorchScript exporter (BatchNorm folded into the convs) at a small
input size, prunes each to half its MACs with L1 scores (the ``--method l1`` path of
``compress``), then times ``recalibrate`` on the same random calibration set:

* ``old``: the per-layer implementation as it was before issue 13 (kept test-only as
  ``tests/gates/recalibrate_reference.py``): rebuilds the pruned graph's executor and reruns it
  over every calibration image for every layer, quadratic in depth;
* ``new``: ``onnxprune.gates.recalibrate.recalibrate``, one sweep in topological order.

Both modes are timed: ``reconstruct`` (the default: least squares with a cross-validated ridge;
the solves cost the same in both implementations) and ``stats`` (no solves, so the forward
passes dominate). The script also checks that both give the same records and weights, and writes
``--json`` (default benchmarks/recalibration.json).

    python tools/bench_recalibration.py --size 64 --samples 128 --json benchmarks/recalibration.json
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
from resnet50 import ResNet, export_onnx, randomize_bn, resnet50  # noqa: E402


def _basic_resnet(blocks: tuple[int, ...]):
    """torchvision's ResNet-18/34 layout (BasicBlock, expansion 1) on tools/resnet50's ResNet."""
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            identity = x if self.downsample is None else self.downsample(x)
            return self.relu(out + identity)

    class BasicResNet(ResNet):
        def _make_layer(self, planes, count, stride=1):
            downsample = None
            if stride != 1 or self.inplanes != planes:
                downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False),
                                           nn.BatchNorm2d(planes))
            layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes
            layers += [BasicBlock(planes, planes) for _ in range(1, count)]
            return nn.Sequential(*layers)

    model = BasicResNet(blocks)
    model.fc = nn.Linear(512, 1000)
    return model


def build(depth: int, folder: Path, size: int):
    """(original, pruned, kept) for ResNet-``depth`` at ``size``x``size``, pruned to half."""
    import onnx

    from onnxprune.analysis.groups import analyze_channels
    from onnxprune.graph import ensure_node_names
    from onnxprune.pipeline import kept_channels
    from onnxprune.scores import baseline_scores
    from onnxprune.select import select
    from onnxprune.surgery import prune_model

    net = resnet50() if depth == 50 else _basic_resnet({18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}[depth])
    path = folder / f"resnet{depth}.onnx"
    export_onnx(randomize_bn(net, seed=depth), path, size=size)
    model = onnx.load(str(path))
    ensure_node_names(model)
    analysis = analyze_channels(model)
    selection = select(analysis, baseline_scores("l1", analysis, 0)[0], 0.5)
    return model, prune_model(model, selection.plan(analysis)), kept_channels(analysis,
                                                                              selection.keep)


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _max_weight_diff(a, b) -> float:
    from onnx import numpy_helper

    wa = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
    wb = {t.name: numpy_helper.to_array(t) for t in b.graph.initializer}
    return max(float(np.abs(wa[n].astype(np.float64) - wb[n]).max(initial=0.0)) for n in wa)


def bench_depth(depth: int, folder: Path, size: int, x: np.ndarray, modes, skip_old: bool):
    import recalibrate_reference as reference

    from onnxprune.gates.recalibrate import _layers, recalibrate

    model, pruned, kept = build(depth, folder, size)
    row = {"depth": depth, "layers": len(_layers(pruned)),
           "convs": sum(n.op_type == "Conv" for n in pruned.graph.node)}
    for mode in modes:
        new_s, (new_model, new_records) = _timed(
            lambda: recalibrate(model, pruned, x, kept, mode=mode))
        row[f"{mode}_new_s"] = round(new_s, 2)
        row[f"{mode}_records"] = len(new_records)
        if skip_old:
            continue
        old_s, (old_model, old_records) = _timed(
            lambda: reference.recalibrate(model, pruned, x, kept, mode=mode))
        row[f"{mode}_old_s"] = round(old_s, 2)
        row[f"{mode}_speedup"] = round(old_s / new_s, 2)
        row[f"{mode}_same_records"] = old_records == new_records
        row[f"{mode}_max_weight_diff"] = _max_weight_diff(new_model, old_model)
        print(f"resnet{depth} {mode}: old {old_s:.1f} s, new {new_s:.1f} s "
              f"({old_s / new_s:.1f}x), {len(new_records)} layers changed, same records "
              f"{old_records == new_records}", flush=True)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depths", default="18,34,50")
    parser.add_argument("--size", type=int, default=64, help="input height and width")
    parser.add_argument("--samples", type=int, default=128, help="calibration images")
    parser.add_argument("--modes", default="reconstruct,stats")
    parser.add_argument("--skip-old", action="store_true", help="time the sweep only")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "recalibration.json"))
    parser.add_argument("--readme", type=Path, help="rewrite the table between the markers")
    parser.add_argument("--from-json", action="store_true",
                        help="only re-render the README table of the --json run")
    args = parser.parse_args(argv)
    if args.from_json:
        write_readme(args.readme, json.loads(Path(args.json).read_text()))
        return 0
    import torch

    x = np.random.default_rng(0).standard_normal(
        (args.samples, 3, args.size, args.size)).astype(np.float32)
    modes = args.modes.split(",")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        rows = [bench_depth(int(d), Path(folder), args.size, x, modes, args.skip_old)
                for d in args.depths.split(",")]
    result = {
        "what": "recalibrate() wall time, old per-layer implementation vs one sweep",
        "models": "ResNet-18/34 (BasicBlock) and -50 (Bottleneck), torchvision layout, random "
                  "weights and BN statistics, TorchScript export (BN folded), pruned to 0.5 MACs "
                  "with L1 scores",
        "input": [3, args.size, args.size], "calibration_samples": args.samples,
        "batch": 64, "modes": modes, "rows": rows,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        "seconds": round(time.perf_counter() - started, 1),
        "command": "python tools/bench_recalibration.py " + " ".join(argv or sys.argv[1:]),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    with open(args.json, "w") as handle:
        json.dump(result, handle, indent=2)
    print(json.dumps(rows, indent=1))
    if args.readme:
        write_readme(args.readme, result)
    return 0


MARK = ("<!-- recalibration-table -->", "<!-- /recalibration-table -->")


def write_readme(path: Path, result: dict) -> None:
    """The README table of a run: seconds per depth and mode, old per-layer vs one sweep."""
    modes = result["modes"]
    lines = [f"Machine: {result['machine']}; input {result['input']}, "
             f"{result['calibration_samples']} calibration images.", "",
             "| depth | layers | " + " | ".join(f"{m}: per layer → sweep" for m in modes) + " |",
             "|---|---|" + "---|" * len(modes)]
    for row in result["rows"]:
        cells = [f"{row.get(f'{m}_old_s', float('nan')):.1f} s → {row[f'{m}_new_s']:.1f} s "
                 f"({row.get(f'{m}_speedup', float('nan')):.1f}×)" for m in modes]
        lines.append(f"| ResNet-{row['depth']} | {row['layers']} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    readme = path.read_text(encoding="utf-8")
    start, end = readme.index(MARK[0]) + len(MARK[0]), readme.index(MARK[1])
    path.write_text(readme[:start] + "\n" + text + "\n" + readme[end:], encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
