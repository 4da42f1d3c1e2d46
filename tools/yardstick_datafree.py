"""Data-free ``compress`` on the Fashion-MNIST validation split (issue 14, for issue 13's choice).

``compress`` without ``--data`` synthesises its inputs (``onnxprune.gates.synthetic``: Gaussian
noise where the graph has no BatchNormalization, the case of the reference models and of most
exported models); gate training (``autobot``) or the refit scores (``refit``) and the least-squares
recalibration then all read those synthetic inputs. Here each ``--methods`` entry runs through
the public API exactly so (``CompressConfig(data=None, eval_data=<val>)``), and its accuracy is
measured on the 5,000 **validation** images (never test), top-1 % before any fine-tuning.

    python tools/yardstick_datafree.py --models vgg,resnet,mobilenetv2 --targets 0.5 \
        --methods autobot,refit --json benchmarks/yardstick_val_datafree.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))


def one_run(model: str, target: float, method: str, seed: int, val: str, folder: Path,
            iterations: int) -> dict:
    from onnxprune.pipeline import CompressConfig, compress

    config = CompressConfig(model=model, output=str(folder / "datafree.onnx"), target=target,
                            data=None, eval_data=val, method=method, seed=seed,
                            iterations=iterations, quiet=True, force=True)
    started = time.monotonic()
    report = compress(config)
    return {"accuracy_before": report.get("accuracy_before"),
            "accuracy_after": report.get("accuracy_after"),
            "macs_ratio": report["macs_after"] / report["macs_before"],
            "method_run": report.get("settings", {}).get("method", method),
            "inputs": report.get("task_loss"),
            "seconds": round(time.monotonic() - started, 1)}


def save(path: str | None, result: dict) -> None:
    if not path:
        return
    tmp = Path(path).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="vgg,resnet,mobilenetv2")
    parser.add_argument("--targets", default="0.5")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--methods", default="autobot,refit")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    import torch

    import fashion_mnist
    from bench_yardstick import machine, versions

    torch.set_num_threads(args.threads)
    started = time.monotonic()
    result = {"issue": 14, "split": "val", "n_eval": 5000, "data": "none (data-free, synthetic)",
              "accuracy": "top-1 % on the 5,000 validation images, before any fine-tuning",
              "machine": machine(args.threads), "versions": versions(),
              "command": "python tools/yardstick_datafree.py " + " ".join(argv),
              "settings": {k: v for k, v in vars(args).items() if k != "json"}, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        x, y = fashion_mnist.load_splits()["val"]
        val = str(Path(tmp) / "val.npz")
        np.savez(val, x=x, y=y)
        for name in [m for m in args.models.split(",") if m]:
            for target in [float(t) for t in args.targets.split(",") if t]:
                for seed in [int(s) for s in args.seeds.split(",") if s]:
                    for method in [m for m in args.methods.split(",") if m]:
                        row = {"model": name, "target": target, "seed": seed, "method": method,
                               "load_average": os.getloadavg()}
                        row.update(one_run(str(ROOT / "models" / f"fashion_{name}.onnx"), target,
                                           method, seed, val, Path(tmp), args.iterations))
                        result["rows"].append(row)
                        result["total_seconds"] = round(time.monotonic() - started, 1)
                        save(args.json, result)
                        print(f"{name} {target} seed {seed} {method}: {row['accuracy_after']:.2f}"
                              f" (unpruned {row['accuracy_before']:.2f}) MACs "
                              f"{row['macs_ratio']:.4f} {row['seconds']:.0f}s", file=sys.stderr,
                              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
