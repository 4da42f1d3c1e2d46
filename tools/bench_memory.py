"""Benchmark: peak RSS of ``onnxprune compress`` with a small and a large image folder (issue 13).

The streamed data pipeline should make the peak memory of a run depend on the model and the
batch, not on the dataset: the same model is compressed with a generated folder of
``--counts`` images (default 1,000 and 20,000; random smooth images in 10 class folders, the
small folder a subset of the large one by hard links), in separate ``python -m onnxprune
compress`` child processes, interleaved (small, large, small, large, ...). The peak RSS of each
child is ``os.wait4``'s ``ru_maxrss`` (the process itself; with ``--workers`` the decoding
workers are separate processes, polled from /proc and reported as ``tree_peak_mib``). Verdict:
the largest and the smallest count's peaks (the highest of the repeats) differ by less than 10%.

    python tools/bench_memory.py --json benchmarks/memory_cpu.json
    python tools/bench_memory.py --model /tmp/resnet50.onnx --image-size 224 --iterations 2 \\
        --preset imagenet --json benchmarks/memory_resnet50_cpu.json

Settings not given stay compress's defaults, except ``--iterations`` (default 20 here, to keep
it short) and ``--calibration-samples``; every setting is recorded in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxprune.runtime.bench import cpu_model  # noqa: E402

CLASSES = 10
TOLERANCE = 0.10


def generate(folder: Path, count: int, size: int, fmt: str, seed: int = 0) -> float:
    """``count`` random smooth RGB images of ``size`` x ``size`` in ``CLASSES`` folders (kept
    when already there); returns the seconds spent."""
    from PIL import Image

    started = time.monotonic()
    rng = np.random.default_rng(seed)
    for name in range(CLASSES):
        (folder / str(name)).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = folder / str(i % CLASSES) / f"{i:06d}.{fmt}"
        low = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)  # upscaled: compresses well
        if not path.exists():
            Image.fromarray(low).resize((size, size), Image.BILINEAR).save(path)
    return time.monotonic() - started


def subset_folder(large: Path, small: Path, count: int, fmt: str) -> None:
    """The first ``count`` images of ``large`` as hard links (the same files, no copies)."""
    for i in range(count):
        name = Path(str(i % CLASSES)) / f"{i:06d}.{fmt}"
        (small / name.parent).mkdir(parents=True, exist_ok=True)
        if not (small / name).exists():
            os.link(large / name, small / name)


def _tree_rss(pid: int) -> int:
    """RSS in KiB of ``pid`` and its child processes (Linux /proc), 0 when gone."""
    total = 0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    except OSError:
        return total
    return total + sum(_tree_rss(int(c)) for c in children)


def run_compress(args, folder: Path, out: Path) -> dict:
    cmd = [sys.executable, "-m", "onnxprune", "compress", args.model, "--data", str(folder),
           "-o", str(out), "--report", str(out.with_suffix(".json")), "--force", "--quiet",
           "--iterations", str(args.iterations), "--workers", str(args.workers),
           "--calibration-samples", str(args.calibration_samples)]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    if args.preset:
        cmd += ["--preset", args.preset]
    if args.input_size:
        cmd += ["--input-size", args.input_size]
    started = time.monotonic()
    log = out.with_suffix(".log")
    with open(log, "w") as handle:
        child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=handle)
    tree_peak = [0]
    done = threading.Event()

    def poll():
        while not done.wait(0.2):
            tree_peak[0] = max(tree_peak[0], _tree_rss(child.pid))

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    _, status, usage = os.wait4(child.pid, 0)
    done.set()
    watcher.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"compress failed ({child.returncode}): "
                         f"{log.read_text().strip()[-2000:]}")
    report = json.loads(out.with_suffix(".json").read_text())
    return {"peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "tree_peak_mib": round(tree_peak[0] / 1024, 1),
            "seconds": round(time.monotonic() - started, 2),
            "evaluation_samples": report["evaluation"]["samples"],
            "accuracy_after": report.get("accuracy_after")}


TABLE_START, TABLE_END = "<!-- memory-table -->", "<!-- /memory-table -->"


def table(paths) -> str:
    """One markdown row per result JSON: model, image size, peaks per folder size, ratio."""
    lines = ["| model | images | settings | peak RSS per folder | largest ÷ smallest | "
             "within 10% | load before |", "|---|---|---|---|---|---|---|"]
    for path in paths:
        r = json.loads(Path(path).read_text())
        s = r["settings"]
        peaks = ", ".join(f"{int(c):,} images: {v:.0f} MiB" for c, v in r["peak_rss_mib"].items())
        lines.append(f"| `{Path(s['model']).name}` | {s['image_size']}×{s['image_size']} "
                     f"{s['format']} | preset {s.get('preset') or 'none'}, "
                     f"{s['calibration_samples']} calibration samples, {s['repeats']} repeat(s) | "
                     f"{peaks} | {r['ratio_largest_to_smallest']:.3f} | "
                     f"{'yes' if r['passed'] else 'no'} | {r['load_average']['before'][0]} |")
    return "\n".join(lines) + "\n"


def write_table(paths, readme) -> int:
    text = (f"JSON: {', '.join(f'`{p}`' for p in paths)}; `python tools/bench_memory.py "
            f"--table-from {' '.join(paths)}`.\n\n" + table(paths))
    print(text, end="")
    if readme:
        body = Path(readme).read_text()
        start, end = body.index(TABLE_START) + len(TABLE_START), body.index(TABLE_END)
        Path(readme).write_text(body[:start] + "\n" + text + body[end:])
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "fashion_resnet.onnx"))
    parser.add_argument("--image-size", type=int, default=28,
                        help="side of the generated square images")
    parser.add_argument("--input-size", default=None, help="compress --input-size H,W "
                        "(for a model with a dynamic size)")
    parser.add_argument("--counts", default="1000,20000")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--calibration-samples", type=int, default=512)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--preset", default=None)
    parser.add_argument("--format", default="jpg", choices=("jpg", "png"))
    parser.add_argument("--work", default="/tmp/onnxprune-bench-memory")
    parser.add_argument("--json", default=None)
    parser.add_argument("--table-from", nargs="+", default=None,
                        help="print the markdown table of these JSON results instead of running")
    parser.add_argument("--readme", default=None, help="with --table-from: rewrite the text "
                                                       f"between {TABLE_START} and {TABLE_END}")
    args = parser.parse_args(argv)
    if args.table_from:
        return write_table(args.table_from, args.readme)
    counts = sorted(int(c) for c in args.counts.split(","))
    work = Path(args.work) / f"{args.image_size}px_{args.format}"
    largest = work / f"images_{counts[-1]}"
    made = generate(largest, counts[-1], args.image_size, args.format)
    for count in counts[:-1]:
        subset_folder(largest, work / f"images_{count}", count, args.format)
    load_before = os.getloadavg()
    runs = []
    for repeat in range(args.repeats):
        for count in counts:
            folder = largest if count == counts[-1] else work / f"images_{count}"
            result = run_compress(args, folder, work / f"out_{count}.onnx")
            runs.append({"images": count, "repeat": repeat, **result})
            print(f"{count} images, repeat {repeat}: peak RSS {result['peak_rss_mib']} MiB, "
                  f"{result['seconds']} s", file=sys.stderr, flush=True)
    peaks = {c: max(r["peak_rss_mib"] for r in runs if r["images"] == c) for c in counts}
    ratio = peaks[counts[-1]] / peaks[counts[0]]
    result = {
        "benchmark": "peak RSS of compress vs image-folder size (issue 13)",
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "load_average": {"before": [round(v, 2) for v in load_before],
                         "after": [round(v, 2) for v in os.getloadavg()]},
        "settings": {"model": os.path.relpath(args.model, ROOT) if args.model.startswith(str(ROOT))
                     else args.model, "image_size": args.image_size, "format": args.format,
                     "iterations": args.iterations, "batch_size": args.batch_size or "default",
                     "calibration_samples": args.calibration_samples, "workers": args.workers,
                     "preset": args.preset, "repeats": args.repeats,
                     "generation_seconds": round(made, 1)},
        "runs": runs,
        "peak_rss_mib": {str(c): v for c, v in peaks.items()},
        "ratio_largest_to_smallest": round(ratio, 4),
        "tolerance": TOLERANCE,
        "passed": abs(ratio - 1.0) < TOLERANCE,
    }
    text = json.dumps(result, indent=2)
    if args.json:
        tmp = Path(args.json).with_suffix(".json.tmp")
        tmp.write_text(text + "\n")
        tmp.replace(args.json)
    print(text)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
