"""Benchmark: how much of each model the analysis can prune, and how long surgery takes.

Every model the project holds: the architectures of ``tests/archs.py`` (exported with both torch
exporters), the representative real-world graphs of ``tests/realworld_archs.py`` (dynamic H/W,
analysed at their ``--input-shape``), the same graphs written as torch modules and exported by
both exporters (``tests/realworld_torch.py``), the onnx wheel's backend-test "light" zoo, the
reference models in ``models/``, and torchvision-style
ResNet-50 and MobileNetV2 from ``tools/resnet50.py`` (224x224, TorchScript). For each: the share of
MACs in prunable channel groups, prunable/total groups, barriers, and the time of analysis and of
surgery for a random half plan (median of ``--repeats``).

    python tools/bench_graphs.py --json benchmarks/graphs.json --readme README.md

(``--markdown FILE`` writes the table alone.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT, ROOT / "tests", ROOT / "tools"):
    sys.path.insert(0, str(folder))

from onnxprune.analysis.groups import analyze_channels  # noqa: E402
from onnxprune.report import human  # noqa: E402
from onnxprune.surgery import prune_model  # noqa: E402

MARK = ("<!-- graphs-table -->", "<!-- /graphs-table -->")


def _models(workdir: Path):
    """(source, name, model, input_shapes) for every model the project holds."""
    import archs
    import realworld_archs as rw

    for name in archs.ARCHS:
        for exporter in ("torchscript", "dynamo"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                path = archs.export(name, workdir, exporter == "dynamo")
            yield "tests/archs.py", f"{name} ({exporter})", onnx.load(str(path)), None
    for name in ("yolov8_detector", "ppocr_recognizer", "nhwc_classifier",
                 "opset9_computed_weights"):
        model, shapes, _ = getattr(rw, name)()
        yield "tests/realworld_archs.py", name, model, shapes
    import realworld_torch as rt

    for case in rt.cases():
        model, shapes, _ = rt.export(*case)
        yield "tests/realworld_torch.py", rt.case_id(case), model, shapes
    zoo = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    for path in sorted(zoo.glob("light_*.onnx")):
        yield "onnx wheel (backend zoo)", path.stem.removeprefix("light_"), \
            onnx.load(str(path)), None
    for path in sorted((ROOT / "models").glob("*.onnx")):
        yield "models/", path.stem, onnx.load(str(path)), None
    from resnet50 import export_onnx, mobilenet_v2, randomize_bn, resnet50

    for name, build in (("resnet50", resnet50), ("mobilenet_v2", mobilenet_v2)):
        path = workdir / f"{name}.onnx"
        export_onnx(randomize_bn(build()), path)
        yield "tools/resnet50.py", f"{name} 224x224", onnx.load(str(path)), None


def _half_plan(analysis, rng) -> dict:
    """A random valid plan keeping half of every prunable group (tests/archs.py)."""
    from archs import random_keep

    return random_keep(analysis, rng, fraction=0.5, skip=0.0)


def measure(model, shapes, repeats: int) -> dict:
    analyse, surgery = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        analysis = analyze_channels(model, input_shapes=shapes)
        analyse.append(time.perf_counter() - start)
        plan = _half_plan(analysis, np.random.default_rng(0))
        start = time.perf_counter()
        prune_model(model, plan, analysis=analysis, input_shapes=shapes)
        surgery.append(time.perf_counter() - start)
    macs = analysis.macs()
    return {"macs": int(macs), "prunable_share": analysis.prunable_macs() / max(macs, 1),
            "groups": len(analysis.groups),
            "prunable_groups": sum(g.prunable for g in analysis.groups),
            "barriers": sorted({b["op"] for b in analysis.barriers}),
            "analysis_s": statistics.median(analyse), "surgery_s": statistics.median(surgery)}


def table(rows: list[dict], machine: str) -> str:
    lines = [f"Machine: {machine}. Analysis and surgery of a random half plan, median of the "
             f"repeats.", "",
             "| source | model | MACs | prunable MACs | prunable groups | barriers | analysis s | "
             "surgery s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['source']} | {r['model']} | {human(r['macs'])} | "
                     f"{100 * r['prunable_share']:.1f}% | {r['prunable_groups']}/{r['groups']} | "
                     f"{', '.join(r['barriers']) or '-'} | {r['analysis_s']:.2f} | "
                     f"{r['surgery_s']:.2f} |")
    return "\n".join(lines)


def _run(repeats: int) -> tuple[str, list[dict]]:
    from onnxprune.runtime.bench import cpu_model

    machine = (f"{cpu_model()}, {os.cpu_count()} cores, load average "
               f"{os.getloadavg()[0]:.1f} at the start")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for source, name, model, shapes in _models(Path(tmp)):
            rows.append({"source": source, "model": name, **measure(model, shapes, repeats)})
            print(f"{name}: {100 * rows[-1]['prunable_share']:.1f}%", file=sys.stderr)
    return machine, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--readme", type=Path)
    parser.add_argument("--markdown", type=Path, help="write the table alone to this file")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--from-json", type=Path, help="only re-render the table of a past run")
    args = parser.parse_args()
    if args.from_json:
        past = json.loads(args.from_json.read_text())
        machine, rows = past["machine"], past["rows"]
    else:
        machine, rows = _run(args.repeats)
    text = table(rows, machine)
    print(text)
    if args.json and not args.from_json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")
    if args.readme:
        readme = args.readme.read_text(encoding="utf-8")
        start, end = readme.index(MARK[0]) + len(MARK[0]), readme.index(MARK[1])
        args.readme.write_text(readme[:start] + "\n" + text + "\n" + readme[end:], encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
