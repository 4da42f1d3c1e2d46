"""Benchmark: one fine-tuning step (every weight trained) in the executor vs native PyTorch.

For each reference architecture (``tools/refmodels.py``) and exporter: the ONNX export run by
``TorchGraph(trainable=True)``, training what ``finetune`` trains (``trained_weights``: every float32
initializer but 0-d constants), against the native module with BatchNorm folded into the convs (the
same arithmetic as the export) and, for reference, the unfolded module. One step = forward,
cross-entropy, backward, SGD with momentum; the sides interleaved, median of ``--steps``.
Target (issue 15): executor ÷ native ≤ 1.3.

    python tools/bench_finetune_step.py --batch 64 --steps 15 --json benchmarks/finetune_step.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import refmodels  # noqa: E402
from bench_executor import export  # noqa: E402

from onnxprune.gates.executor import TorchGraph  # noqa: E402
from onnxprune.gates.finetune import trained_weights  # noqa: E402


def _executor(proto):
    graph = TorchGraph(proto, trainable=True)
    trained_weights(graph)  # freezes the 0-d constants, as finetune() does
    return graph


def _side(module):
    params = [p for p in module.parameters() if p.requires_grad]
    return module, torch.optim.SGD(params, lr=1e-3, momentum=0.9)


def _step(module, optimizer, x, y) -> float:
    start = time.perf_counter()
    out = module(x)
    loss = F.cross_entropy(out[0] if isinstance(out, tuple) else out, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def bench(name: str, dynamo: bool, batch: int, steps: int, warmup: int) -> dict:
    from torch.fx.experimental.optimization import fuse

    model = refmodels.build(name).eval()
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    proto = export(model, x[:2], dynamo)
    sides = {"native": _side(model.train()), "native_fused": _side(fuse(model.eval())),
             "executor": _side(_executor(proto))}
    times = {side: [] for side in sides}
    order = list(sides)
    for i in range(warmup + steps):
        order = order[1:] + order[:1]
        for side in order:
            elapsed = _step(*sides[side], x, y)
            if i >= warmup:
                times[side].append(elapsed)
    ms = {side: statistics.median(v) * 1e3 for side, v in times.items()}
    return {"model": name, "exporter": "dynamo" if dynamo else "torchscript",
            **{f"{side}_ms": round(v, 3) for side, v in ms.items()},
            "ratio_vs_fused": round(ms["executor"] / ms["native_fused"], 3),
            "ratio_vs_unfused": round(ms["executor"] / ms["native"], 3)}


def markdown(report: dict) -> str:
    """The README table of one run."""
    load = ", ".join(f"{v:.1f}" for v in report["load_average_at_start"])
    lines = [f"Machine: {report['cpu']}, {report['cpus']} cores, {report['threads']} torch threads, "
             f"load average {load} at the start; batch {report['batch']}, median of "
             f"{report['steps']} interleaved steps; target executor ÷ fused native ≤ "
             f"{report['target']}.", "",
             "| model | exporter | native fused ms | executor ms | ÷ fused native | ÷ unfused native |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['exporter']} | {r['native_fused_ms']:.1f} | "
              f"{r['executor_ms']:.1f} | {r['ratio_vs_fused']:.2f} | {r['ratio_vs_unfused']:.2f} |"
              for r in report["rows"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=list(refmodels.MODELS))
    parser.add_argument("--exporters", nargs="*", default=["torchscript", "dynamo"])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--table-from", type=Path, metavar="JSON",
                        help="print the README table of a saved run and exit")
    args = parser.parse_args(argv)
    if args.table_from:
        print(markdown(json.loads(args.table_from.read_text())))
        return 0
    torch.manual_seed(0)
    load, rows = os.getloadavg(), []
    for name in args.models:
        for dynamo in [e == "dynamo" for e in args.exporters]:
            rows.append(bench(name, dynamo, args.batch, args.steps, args.warmup))
            r = rows[-1]
            print(f"{r['model']:12s} {r['exporter']:11s} fused {r['native_fused_ms']:8.2f} ms  "
                  f"executor {r['executor_ms']:8.2f} ms  ratio {r['ratio_vs_fused']:.3f}  "
                  f"(vs unfused {r['ratio_vs_unfused']:.3f})", flush=True)
    from onnxprune.runtime.bench import cpu_model

    report = {"batch": args.batch, "steps": args.steps, "threads": torch.get_num_threads(),
              "cpu": cpu_model(), "cpus": os.cpu_count(), "load_average_at_start": load,
              "load_average": os.getloadavg(), "torch": torch.__version__,
              "rows": rows, "max_ratio_vs_fused": max(r["ratio_vs_fused"] for r in rows),
              "target": 1.3}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["max_ratio_vs_fused"] <= 1.3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
