"""Benchmark: TorchGraph (ONNX executed with torch ops) vs the native PyTorch model.

For each reference model (``tools/refmodels.py``) and each exporter (TorchScript, dynamo), one
training step of gates — forward, loss, backward — with frozen weights and one trainable
sigmoid gate vector per conv input, on both sides, interleaved, median of ``--steps``.
``--suite imagenet`` runs the ResNet-50 and MobileNetV2 of ``tools/resnet50.py`` at 3x224x224
instead and adds a fourth side, ``gated``: the gate-training module itself (``GatedGraph``, one
gate per prunable channel of the channel analysis, multiplied where the analysis reads it).

    python tools/bench_executor.py --batch 64 --steps 20 --json bench_executor.json
    python tools/bench_executor.py --suite imagenet --batch 8 --steps 8 \
        --json benchmarks/executor_imagenet_cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import refmodels  # noqa: E402
import resnet50 as imagenet_models  # noqa: E402

from onnxprune.gates.executor import TorchGraph  # noqa: E402


def export(model: nn.Module, x: torch.Tensor, dynamo: bool) -> onnx.ModelProto:
    """The ONNX export of ``model`` with a dynamic batch, by either exporter."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if dynamo:
            batch = torch.export.Dim("batch")
            program = torch.onnx.export(model, (x,), dynamo=True, verbose=False,
                                        dynamic_shapes={"x": {0: batch}})
            return program.model_proto
        buffer = io.BytesIO()
        torch.onnx.export(model, (x,), buffer, dynamo=False, opset_version=17, input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}})
        return onnx.load_from_string(buffer.getvalue())


def gate(channels: int) -> tuple[torch.Tensor, callable]:
    """A trainable gate vector and the function multiplying an NCHW input by sigmoid of it."""
    alpha = torch.zeros(channels, requires_grad=True)
    return alpha, lambda t: t * torch.sigmoid(alpha).view(1, -1, *([1] * (t.dim() - 2)))


def native_side(model: nn.Module, fuse_bn: bool = False):
    """The model itself, frozen, with a gate in front of every conv (forward pre-hooks).

    ``fuse_bn`` folds BatchNorm into the convs first, as both exporters do, to compare the
    executor with native PyTorch on the same arithmetic.
    """
    if fuse_bn:
        from torch.fx.experimental.optimization import fuse

        model = fuse(model, inplace=False)
    for p in model.parameters():
        p.requires_grad_(False)
    alphas = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            alpha, fn = gate(module.in_channels)
            alphas.append(alpha)
            module.register_forward_pre_hook(lambda mod, args, fn=fn: (fn(args[0]),))
    return model, alphas


def executor_side(proto: onnx.ModelProto):
    """TorchGraph of the export with the same gates as read hooks on each Conv's input 0."""
    weights = {t.name: t.dims for t in proto.graph.initializer}
    hooks, alphas = {}, []
    graph = TorchGraph(proto)
    for node in graph._nodes:
        if node.op_type == "Conv":
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            alpha, fn = gate(weights[node.input[1]][1] * group)
            alphas.append(alpha)
            hooks[(node.name, 0)] = fn
    graph.set_read_hooks(hooks)
    return graph, alphas


def gated_side(proto: onnx.ModelProto):
    """The gate-training module of ``train_gates`` (GatedGraph over the channel analysis)."""
    from onnxprune.analysis.groups import analyze_channels
    from onnxprune.gates.autobot import GatedGraph

    gated = GatedGraph(proto, analyze_channels(proto))
    return gated.forward, [gated.alpha]


IMAGENET = {"resnet50": imagenet_models.resnet50, "mobilenet_v2": imagenet_models.mobilenet_v2}


def step_time(module, alphas, x) -> tuple[float, float]:
    """Wall and process-CPU seconds of one forward + backward step."""
    start, cpu = time.perf_counter(), time.process_time()
    loss = module(x).square().mean()
    loss.backward()
    for a in alphas:
        a.grad = None
    return time.perf_counter() - start, time.process_time() - cpu


def bench(name: str, dynamo: bool, batch: int, steps: int, warmup: int) -> dict:
    imagenet = name in IMAGENET
    if imagenet:
        model = imagenet_models.randomize_bn(IMAGENET[name]()).eval()
        x = torch.randn(batch, 3, 224, 224)
    else:
        model = refmodels.build(name).eval()
        x = torch.randn(batch, 1, 28, 28)
    proto = export(model, x[:2], dynamo)
    fused = native_side(model, fuse_bn=True)  # first: a fused copy must not inherit the hooks
    sides = {"native": native_side(model), "native_fused": fused, "executor": executor_side(proto)}
    counts = {len(alphas) for _, alphas in sides.values()}
    if imagenet:
        sides["gated"] = gated_side(proto)
    assert len(counts) == 1, "different number of gated convs"
    times = {side: [] for side in sides}
    cpu = {side: [] for side in sides}
    order = list(sides)
    for i in range(warmup + steps):
        order = order[1:] + order[:1]  # rotate so no side always runs right after another
        for side in order:
            module, alphas = sides[side]
            elapsed, used = step_time(module, alphas, x)
            if i >= warmup:
                times[side].append(elapsed)
                cpu[side].append(used)
    ms = {side: statistics.median(values) * 1e3 for side, values in times.items()}
    cpu_ms = {side: statistics.median(values) * 1e3 for side, values in cpu.items()}
    row = {"model": name, "exporter": "dynamo" if dynamo else "torchscript",
           "input": list(x.shape[1:]),
           "onnx_ops": sorted({n.op_type for n in proto.graph.node}), "gated_convs": counts.pop(),
           **{f"{side}_ms": round(value, 3) for side, value in ms.items()},
           "ratio": round(ms["executor"] / ms["native"], 3),
           "ratio_vs_fused": round(ms["executor"] / ms["native_fused"], 3),
           **{f"{side}_cpu_ms": round(value, 3) for side, value in cpu_ms.items()},
           "cpu_ratio": round(cpu_ms["executor"] / cpu_ms["native"], 3)}
    if "gated" in ms:
        row["gated_ratio"] = round(ms["gated"] / ms["native"], 3)
        row["gated_ratio_vs_fused"] = round(ms["gated"] / ms["native_fused"], 3)
        row["gated_channels"] = int(sides["gated"][1][0].numel())
    return row


def cpu_name() -> str:
    from onnxprune.runtime.bench import cpu_model

    return cpu_model()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--suite", choices=("reference", "imagenet"), default="reference",
                        help="reference: the 28x28 models of tools/refmodels.py; imagenet: "
                             "ResNet-50 and MobileNetV2 at 3x224x224 (tools/resnet50.py)")
    parser.add_argument("--models", nargs="*", help="names within the suite [all]")
    parser.add_argument("--exporters", nargs="*", choices=("torchscript", "dynamo"),
                        default=["torchscript", "dynamo"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_start = os.getloadavg()
    results = []
    names = args.models or list(IMAGENET if args.suite == "imagenet" else refmodels.MODELS)
    for name in names:
        for dynamo in [e == "dynamo" for e in args.exporters]:
            row = bench(name, dynamo, args.batch, args.steps, args.warmup)
            results.append(row)
            print(f"{row['model']:12s} {row['exporter']:11s} native {row['native_ms']:8.2f} ms  "
                  f"fused {row['native_fused_ms']:8.2f} ms  executor {row['executor_ms']:8.2f} ms  "
                  f"ratio {row['ratio']:.3f}  vs fused {row['ratio_vs_fused']:.3f}  "
                  f"cpu-time ratio {row['cpu_ratio']:.3f}"
                  + (f"  gated {row['gated_ms']:8.2f} ms ratio {row['gated_ratio']:.3f}"
                     if "gated_ms" in row else ""), flush=True)
    report = {"suite": args.suite, "batch": args.batch, "steps": args.steps, "warmup": args.warmup, "device": "cpu",
              "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
              "torch": torch.__version__, "results": results,
              "max_ratio": max(r["ratio"] for r in results),
              "max_ratio_vs_fused": max(r["ratio_vs_fused"] for r in results),
              "max_cpu_ratio": max(r["cpu_ratio"] for r in results),
              "load_average_start": load_start, "load_average": os.getloadavg(),
              "cpu": cpu_name()}
    gated = [r["gated_ratio"] for r in results if "gated_ratio" in r]
    if gated:
        report["max_gated_ratio"] = max(gated)
    if args.json:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
