"""Benchmark: does the DEFAULT ``compress`` ever make a model slower? (issue 17, CPU)

For the quick-start model (``models/resnet.onnx``) and the MobileNet-style reference
(``models/mobilenetv2.onnx``): run ``compress`` with its defaults (AutoBot, ``--round-to auto``,
target 0.5, MNIST-5k training split, held-out figures), and the same run with ``--round-to 1``
(the old default), then time the original and both pruned models in ONE interleaved
``bench_models`` call per model at batch 1 and 32, so drift of a shared machine hits all alike.
Verdict: the default's p50 speedup is at least 1.0 at both batch sizes on both models.

    python tools/bench_defaults.py --json benchmarks/defaults_cpu.json --readme README.md
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxprune.pipeline import CompressConfig, compress  # noqa: E402
from onnxprune.runtime.bench import bench_models, cpu_model  # noqa: E402

MODELS = ("resnet", "mobilenetv2")
BATCHES = (1, 32)
MARK = ("<!-- defaults-table -->", "<!-- /defaults-table -->")


def _compress(name: str, out: Path, round_to, iterations: int) -> dict:
    return compress(CompressConfig(
        model=str(ROOT / "models" / f"{name}.onnx"), output=str(out), target=0.5,
        data=str(ROOT / "models" / "mnist_train.npz"),
        eval_data=str(ROOT / "models" / "mnist_test.npz"), iterations=iterations,
        round_to=round_to, quiet=True))


def run_model(name: str, workdir: Path, iterations: int, timed: int) -> dict:
    """Compress with the default and with round_to=1, then one interleaved benchmark."""
    default = _compress(name, workdir / f"{name}_auto.onnx", "auto", iterations)
    old = _compress(name, workdir / f"{name}_r1.onnx", 1, iterations)
    bench = bench_models([str(ROOT / "models" / f"{name}.onnx"), default["output"], old["output"]],
                         provider="cpu", batches=BATCHES, iterations=timed, warmup=20,
                         names=("original", "default (round-to auto)", "round-to 1"))
    speed = {m["name"]: {b: s["p50"] for b, s in m["speedup"].items()} for m in bench["models"]}
    return {
        "model": name,
        "default": {"macs_ratio": default["macs_ratio"], "accuracy_after": default["accuracy_after"],
                    "round_to": default["round_to"]["auto"]},
        "round_to_1": {"macs_ratio": old["macs_ratio"], "accuracy_after": old["accuracy_after"]},
        "accuracy_before": default["accuracy_before"],
        "speedup_p50": speed, "benchmark": bench,
        "default_not_slower": all(v >= 1.0 for v in speed["default (round-to auto)"].values()),
    }


def table(rows: list[dict], machine: str) -> str:
    lines = [f"Machine: {machine}. One interleaved `bench` run per model (p50 speedup over the "
             f"original, ONNX Runtime CPU provider).", "",
             "| model | setting | MAC fraction | accuracy (unpruned → pruned) | "
             + " | ".join(f"speedup batch {b}" for b in BATCHES) + " |",
             "|---|---|---|---|" + "---|" * len(BATCHES)]
    for row in rows:
        for label, key in (("default (round-to auto)", "default"), ("round-to 1", "round_to_1")):
            cells = [f"{row['speedup_p50'][label][str(b)]:.2f}x" for b in BATCHES]
            lines.append(f"| {row['model']} | {label} | {row[key]['macs_ratio']:.3f} | "
                         f"{row['accuracy_before']:.2f} → {row[key]['accuracy_after']:.2f} | "
                         + " | ".join(cells) + " |")
    verdict = all(r["default_not_slower"] for r in rows)
    lines += ["", f"Default never slower than the original at batch 1 and 32: "
                  f"**{'yes' if verdict else 'NO'}**."]
    return "\n".join(lines)


def write_readme(path: Path, text: str) -> None:
    readme = path.read_text(encoding="utf-8")
    start, end = readme.index(MARK[0]) + len(MARK[0]), readme.index(MARK[1])
    path.write_text(readme[:start] + "\n" + text + "\n" + readme[end:], encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--readme", type=Path, help="rewrite the table between the markers")
    parser.add_argument("--iterations", type=int, default=200, help="gate-training iterations")
    parser.add_argument("--timed", type=int, default=200, help="timed runs per model and batch")
    args = parser.parse_args()
    started = time.monotonic()
    load = os.getloadavg()[0]
    machine = (f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
               f"load average {load:.1f} at the start (a shared machine)")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_model(name, Path(tmp), args.iterations, args.timed) for name in MODELS]
    result = {"machine": machine, "seconds": round(time.monotonic() - started, 1), "rows": rows,
              "passed": all(r["default_not_slower"] for r in rows)}
    text = table(rows, machine)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.readme:
        write_readme(args.readme, text)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
