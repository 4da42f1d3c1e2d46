"""The Python steps of ``tools/gpu_check.sh`` (issue 13), one subcommand each.

* ``preflight``: fails fast (exit 2, one line) when torch sees no CUDA device, when a package
  onnxprune needs is missing, or when ONNX Runtime's CUDA execution provider is not there or a
  session on it falls back to the CPU (``session.get_providers()`` must start with CUDA);
  writes what it found as JSON.
* ``export``: a ResNet-50 (``tools/resnet50.py``, random weights and BN statistics) at 224x224,
  or with ``--tiny`` a two-stage BasicBlock ResNet at 32x32 (the dry run on the CPU).
* ``step``: one gate-training step (forward, loss, backward into one sigmoid gate vector per
  conv input, weights frozen) of the ONNX export run by onnxprune's executor, against the same
  step in native PyTorch (BatchNorm as modules, and folded as the exporter folds it), on one
  device, interleaved, median of ``--steps``; CUDA is synchronised around every step.
* ``timed``: runs a command (``onnxprune compress``), recording wall time, exit code and the
  child's peak RSS.
* ``summary``: the compress run, its report's figures and the bench JSON into one file.

With ``--device cpu`` (``GPU_CHECK_DRY=1``) the same code runs without a GPU.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT))

NEEDED = ("numpy", "onnx", "onnx_graphsurgeon", "click", "PIL", "torch", "onnxruntime")


class CheckFailed(Exception):
    """A missing prerequisite: printed as one line, exit code 2."""


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _tiny_onnx() -> bytes:
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "probe",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                                             [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                              [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def preflight(device: str) -> dict:
    missing = []
    for name in NEEDED:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            missing.append(f"{name} ({exc})")
    if missing:
        raise CheckFailed("missing Python packages: " + "; ".join(missing) + " (carry their "
                          "wheels in .whl/, see /work/.library/device/README.md)")
    import numpy as np
    import onnxruntime as ort
    import torch

    found = {"device": device, "torch": torch.__version__, "torch_cuda": torch.version.cuda,
             "onnxruntime": ort.__version__, "onnxruntime_path": os.path.dirname(ort.__file__),
             "available_providers": ort.get_available_providers(),
             "python": platform.python_version()}
    cuda = device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise CheckFailed(f"torch {torch.__version__} sees no CUDA device "
                          f"(built for CUDA {torch.version.cuda})")
    if cuda:
        found["gpu"] = torch.cuda.get_device_name(0)
        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise CheckFailed(f"onnxruntime {ort.__version__} at {found['onnxruntime_path']} has "
                              f"no CUDAExecutionProvider (available: "
                              f"{', '.join(ort.get_available_providers())}); assemble "
                              f"onnxruntime-gpu into /tmp/ortsite (../shared/gpu/README.md)")
    providers = (["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda
                 else ["CPUExecutionProvider"])
    session = ort.InferenceSession(_tiny_onnx(), providers=providers)
    found["session_providers"] = session.get_providers()
    if found["session_providers"][0] != providers[0]:
        raise CheckFailed(f"an ONNX Runtime session asked for {providers[0]} runs on "
                          f"{found['session_providers']}: the CUDA EP did not load (cuDNN/cuBLAS?)")
    session.run(None, {"x": np.ones((1, 3, 8, 8), np.float32)})
    return found


def tiny_resnet():
    from resnet50 import BasicBlock, ResNet

    class Tiny(ResNet):
        """conv1 + layer1..4 of one BasicBlock each at widths 64..512 is the smallest
        torchvision-layout ResNet; keep it but at 10 classes."""

    return Tiny((1, 1, 1, 1), num_classes=10, block=BasicBlock)


def _net(tiny: bool):
    """The model of the check, the same weights every time (seeded)."""
    import torch

    from resnet50 import randomize_bn, resnet50

    torch.manual_seed(0)
    return randomize_bn(tiny_resnet() if tiny else resnet50(), seed=0).eval()


def export(path: Path, tiny: bool) -> dict:
    from resnet50 import export_onnx

    size = 32 if tiny else 224
    start = time.perf_counter()
    export_onnx(_net(tiny), path, size=size)
    return {"model": "tiny resnet (1,1,1,1)" if tiny else "resnet50", "input": [3, size, size],
            "export_s": round(time.perf_counter() - start, 2)}


# --- gate-training step ------------------------------------------------------------------------


def _gate(channels: int, device: str):
    import torch

    alpha = torch.zeros(channels, device=device, requires_grad=True)
    return alpha, lambda t: t * torch.sigmoid(alpha).view(1, -1, *([1] * (t.dim() - 2)))


def native_side(model, device: str, fuse_bn: bool):
    """The torch model, frozen, a gate in front of every conv (forward pre-hooks)."""
    from torch import nn

    if fuse_bn:
        from torch.fx.experimental.optimization import fuse

        model = fuse(model, inplace=False)
    model = model.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    alphas = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            alpha, fn = _gate(module.in_channels, device)
            alphas.append(alpha)
            module.register_forward_pre_hook(lambda mod, args, fn=fn: (fn(args[0]),))
    return model, alphas


def executor_side(proto, device: str):
    """onnxprune's TorchGraph of the export with the same gates as read hooks on each Conv."""
    from onnxprune.gates.executor import TorchGraph

    dims = {t.name: t.dims for t in proto.graph.initializer}
    graph = TorchGraph(proto).float().to(device)
    hooks, alphas = {}, []
    for node in graph._nodes:
        if node.op_type == "Conv":
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            alpha, fn = _gate(dims[node.input[1]][1] * group, device)
            alphas.append(alpha)
            hooks[(node.name, 0)] = fn
    graph.set_read_hooks(hooks)
    return graph, alphas


def _step(module, alphas, x, cuda: bool) -> float:
    import torch

    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    loss = module(x).square().mean()
    loss.backward()
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    for a in alphas:
        a.grad = None
    return elapsed


def step_bench(tiny: bool, device: str, batch: int, steps: int, warmup: int,
               onnx_path: Path | None = None) -> dict:
    """The step timings; ``onnx_path``: the export of ``export`` (same seeded weights), else
    exported here."""
    import onnx
    import torch

    size = 32 if tiny else 224
    net = _net(tiny)
    if onnx_path is None:
        with tempfile.TemporaryDirectory() as folder:
            export(Path(folder) / "step.onnx", tiny)
            proto = onnx.load(str(Path(folder) / "step.onnx"))
    else:
        proto = onnx.load(str(onnx_path))
    fused = native_side(net, device, fuse_bn=True)  # first: the copy must not get the hooks
    sides = {"native": native_side(net, device, fuse_bn=False), "native_fused": fused,
             "executor": executor_side(proto, device)}
    x = torch.randn(batch, 3, size, size, device=device)
    cuda = device.startswith("cuda")
    times = {side: [] for side in sides}
    order = list(sides)
    for i in range(warmup + steps):
        order = order[1:] + order[:1]  # rotate: no side always runs right after another
        for side in order:
            elapsed = _step(*sides[side], x, cuda)
            if i >= warmup:
                times[side].append(elapsed)
    ms = {side: statistics.median(v) * 1e3 for side, v in times.items()}
    return {"model": "tiny resnet" if tiny else "resnet50", "input": [3, size, size],
            "batch": batch, "steps": steps, "warmup": warmup, "device": device,
            "gpu": torch.cuda.get_device_name(0) if cuda else None,
            **{f"{side}_ms": round(v, 3) for side, v in ms.items()},
            "ratio": round(ms["executor"] / ms["native"], 3),
            "ratio_vs_fused": round(ms["executor"] / ms["native_fused"], 3),
            "torch": torch.__version__}


def timed(command: list[str], log: Path) -> dict:
    """Run ``command``; its wall time, exit code and peak RSS (the child's high-water mark),
    its output tee'd to ``log``."""
    import resource
    import subprocess

    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        for line in proc.stdout:
            sys.stderr.write(line)
            handle.write(line)
        rc = proc.wait()
    return {"command": command, "rc": rc, "wall_s": round(time.perf_counter() - start, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}


def summary(compress: Path, report: Path, bench: Path) -> dict:
    """The compress run (time, RSS), its report's figures and the bench JSON in one object."""
    data = {"compress": json.loads(compress.read_text())}
    if report.exists():
        keep = ("macs_before", "macs_after", "target", "params_before", "params_after",
                "settings", "validation", "benchmark", "recalibrated_convs", "task_loss")
        full = json.loads(report.read_text())
        data["report"] = {k: full[k] for k in keep if k in full}
    if bench.exists():
        data["bench"] = json.loads(bench.read_text())
    return data


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("preflight")
    p.add_argument("--device", default="cuda")
    p.add_argument("--json", type=Path, required=True)
    p = sub.add_parser("export")
    p.add_argument("path", type=Path)
    p.add_argument("--tiny", action="store_true")
    p = sub.add_parser("step")
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--onnx", type=Path, help="the export of 'export' (else exported again)")
    p.add_argument("--json", type=Path, required=True)
    p = sub.add_parser("timed")
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--log", type=Path, required=True)
    p.add_argument("command", nargs=argparse.REMAINDER)
    p = sub.add_parser("summary")
    p.add_argument("--compress", type=Path, required=True)
    p.add_argument("--report", type=Path, required=True)
    p.add_argument("--bench", type=Path, required=True)
    p.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "preflight":
            result = preflight(args.device)
            write_json(args.json, result)
        elif args.cmd == "export":
            result = export(args.path, args.tiny)
        elif args.cmd == "step":
            result = step_bench(args.tiny, args.device, args.batch, args.steps, args.warmup,
                                args.onnx)
            write_json(args.json, result)
        elif args.cmd == "timed":
            command = args.command[1:] if args.command[:1] == ["--"] else args.command
            result = timed(command, args.log)
            write_json(args.json, result)
            if result["rc"] != 0:
                print(f"gpu_check: {' '.join(command[:4])} ... failed with exit code "
                      f"{result['rc']} (log: {args.log})", file=sys.stderr)
                return result["rc"]
        else:
            result = summary(args.compress, args.report, args.bench)
            write_json(args.json, result)
    except CheckFailed as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
