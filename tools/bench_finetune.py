"""Fine-tuning benchmark (issue 15): accuracy after a short fine-tune vs unpruned and vs scratch.

For each Fashion-MNIST reference model ``models/fashion_<name>.onnx``, MAC target and seed:

* **unpruned**: the reference model;
* **compress**: ``compress`` with its default settings (public API, ``CompressConfig``), gates and
  recalibration on the 55,000-image training split;
* **fine-tuned**: that pruned model, every weight trained for ``--epochs`` on the training split
  (``onnxprune.gates.finetune.finetune``: distillation from the unpruned model + CE, SGD with
  momentum, warm-up + cosine, the ``FinetuneConfig`` defaults except ``--lr``);
* **scratch**: the same pruned architecture with its weights re-initialised (He-normal convs, the
  PyTorch ``Linear`` default for Gemm/MatMul, zero biases; BN is folded, so the convs are plain
  convs; the last conv of every residual branch starts at zero, as zero-init of the last BN scale
  does) and trained with the same optimizer, schedule, lr and number of steps, cross-entropy only.

Figures are top-1 % in ONNX Runtime on ``--split`` (``val``: the 5,000 validation images, the only
split used to choose ``--lr``/``--epochs`` and the other settings; ``test``: the 10,000 test
images, the table). Pruned models are cached in ``--cache`` per (model, target, seed, resolved
method; the commit they came from is recorded), trained models per settings: training never
reads the test split, so ``--split test`` evaluates the very models its validation run trained.
Rows are written after each cell (``--json``, merged with the rows already there: a cell is
replaced when rerun), so a run can be widened step by step. ``--table-out`` writes the README
table; ``--table-from JSON...`` only renders the table of stored rows.

    python tools/bench_finetune.py --split val --models vgg --targets 0.25 --lrs 0.003,0.01,0.03 \\
        --no-scratch --json benchmarks/finetune_search.json
    python tools/bench_finetune.py --split test --models vgg --lrs 0.03 --epochs 3 \\
        --json benchmarks/finetune.json --table-out /tmp/notes/finetune_table.md
    python tools/bench_finetune.py --table-from benchmarks/finetune.json --split test
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT))

GOALS = {0.5: 0.5, 0.25: 1.5}  # target -> allowed drop (points) of the fine-tuned model
KEY = ("split", "model", "target", "seed", "epochs", "lr", "variant", "compress_method")
TUNABLE = ("optimizer", "batch_size", "temperature", "alpha", "augment", "weight_decay")


def variant(settings: dict) -> str:
    """The fine-tune settings of a row other than lr/epochs that differ from the
    ``FinetuneConfig`` defaults, as ``key=value`` joined by commas ('' for the defaults)."""
    from onnxprune.gates.config import FinetuneConfig

    default = FinetuneConfig()
    return ",".join(f"{k}={settings[k]}" for k in TUNABLE
                    if k in settings and settings[k] != getattr(default, k))


# ------------------------------------------------------------------------------ re-initialisation
def _consumers(model: onnx.ModelProto) -> dict[str, list]:
    uses: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            uses.setdefault(name, []).append(node)
    return uses


def residual_branch_convs(model: onnx.ModelProto) -> set[str]:
    """Weight names of the last conv of each residual branch: of the Conv-produced inputs of an
    Add, those read by the Add alone; of these the largest kernel (then the latest node)."""
    producer = {out: node for node in model.graph.node for out in node.output}
    uses, order = _consumers(model), {n.name: i for i, n in enumerate(model.graph.node)}
    dims = {t.name: tuple(t.dims) for t in model.graph.initializer}
    branch = set()
    for node in model.graph.node:
        if node.op_type != "Add":
            continue
        convs = [producer[i] for i in node.input
                 if i in producer and producer[i].op_type == "Conv" and len(uses[i]) == 1]
        if convs:
            last = max(convs, key=lambda c: (math.prod(dims.get(c.input[1], (1,))[2:]),
                                             order[c.name]))
            branch.add(last.input[1])
    return branch


def reinitialised(model: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """A copy of ``model`` with fresh weights (see the module docstring); same names and dtypes."""
    rng = np.random.default_rng(seed)
    inits = {t.name: t for t in model.graph.initializer}
    zero_branch, fresh = residual_branch_convs(model), {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        w = node.input[1]
        if w not in inits:
            continue
        shape = tuple(inits[w].dims)
        if node.op_type == "Conv":
            fan_in = math.prod(shape[1:])
            value = (np.zeros(shape) if w in zero_branch
                     else rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape))
        else:
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            fan_in = shape[1] if (node.op_type == "Gemm" and trans_b) else shape[0]
            bound = 1.0 / math.sqrt(fan_in)
            value = rng.uniform(-bound, bound, size=shape)
        fresh[w] = value
        if len(node.input) > 2 and node.input[2] in inits:
            fresh[node.input[2]] = np.zeros(tuple(inits[node.input[2]].dims))
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for init in out.graph.initializer:
        if init.name in fresh:
            dtype = numpy_helper.to_array(init).dtype
            init.CopyFrom(numpy_helper.from_array(fresh[init.name].astype(dtype), init.name))
    return out


# ------------------------------------------------------------------------------ one cell
def accuracy_ort(model, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    source = model if isinstance(model, str) else model.SerializeToString()
    sess = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    pred = np.concatenate([sess.run(None, {name: x[i:i + 1000]})[0].argmax(1)
                           for i in range(0, len(x), 1000)])
    return float((pred == y).mean() * 100)


def git_commit() -> str:
    """HEAD of the repository, with the package's files that differ from it."""
    import subprocess

    def git(*cmd):
        return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True).stdout
    head = git("rev-parse", "--short=10", "HEAD").strip() or "unknown"
    changed = git("status", "--porcelain", "--", "onnxprune").splitlines()
    dirty = sorted(line[3:] for line in changed)
    return head + (f" + uncommitted {', '.join(dirty)}" if dirty else "")


def compressed(name: str, target: float, seed: int, files: dict, cache: Path) -> tuple:
    """(pruned model path, compress report): ``compress`` with default settings, cached per
    (model, target, seed, resolved method); the cache entry records the commit it came from."""
    from onnxprune.pipeline import CompressConfig, compress, resolve_method

    config = CompressConfig(model=str(ROOT / "models" / f"fashion_{name}.onnx"), output="",
                            target=target, data=files["train"], eval_data=files["val"],
                            seed=seed, quiet=True, force=True)
    method = resolve_method(config)
    out = cache / f"{name}_{target}_{seed}_{method}.onnx"
    meta = out.with_suffix(".json")
    if out.exists() and meta.exists():
        return out, {**json.loads(meta.read_text()), "cached": True}
    started, commit = time.monotonic(), git_commit()
    report = compress(replace(config, output=str(out)))
    about = {"macs_ratio": report["macs_after"] / report["macs_before"],
             "params_after": report["params_after"], "params_before": report["params_before"],
             "method": report.get("method", method), "commit": commit,
             "seconds": round(time.monotonic() - started, 1)}
    write_json(meta, about)
    return out, {**about, "cached": False}


def train(pruned, teacher, data, lr: float, epochs: int, seed: int, tuned: dict):
    from onnxprune.gates.config import FinetuneConfig
    from onnxprune.gates.finetune import finetune

    config = FinetuneConfig(epochs=epochs, lr=lr, seed=seed, **tuned)
    started = time.monotonic()
    def progress(step, total, terms):
        if step % 200 == 0 or step == total:
            print(f"  step {step}/{total} loss {terms['loss']:.4f} "
                  f"{time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)

    result = finetune(pruned, teacher, *data["train"], config, eval_set=data["val"],
                      progress=progress)
    return result, round(time.monotonic() - started, 1), config


def trained(part: str, pruned_path: Path, teacher, data, lr, args, seed) -> dict:
    """Train ``part`` (finetune | scratch) of a cell, or reuse the model trained with the same
    settings before (training never reads the test split, so a ``--split test`` run evaluates
    the very model its validation run chose): {model path, history, steps, seconds, settings}."""
    tag = variant(args.tuned).replace("=", "").replace(",", "_")
    limit = f"_n{args.train_limit}" if args.train_limit else ""
    out = pruned_path.with_name(f"{pruned_path.stem}_{part}_e{args.epochs}_lr{lr:g}"
                                f"{'_' + tag if tag else ''}{limit}.onnx")
    meta = out.with_suffix(".json")
    if out.exists() and meta.exists():
        return {**json.loads(meta.read_text()), "path": out, "cached": True}
    pruned = onnx.load(str(pruned_path))
    if part == "scratch":
        pruned, teacher = reinitialised(pruned, seed), None
    result, seconds, config = train(pruned, teacher, data, lr, args.epochs, seed, args.tuned)
    tmp = out.with_suffix(".tmp.onnx")
    onnx.save(result.model, str(tmp))
    os.replace(tmp, out)
    about = {"history": result.history, "steps": result.steps, "seconds": seconds,
             "settings": vars(config)}
    write_json(meta, about)
    return {**about, "path": out, "cached": False}


def run_cell(name, target, seed, lr, args, data, files, cache) -> dict:
    teacher_path = ROOT / "models" / f"fashion_{name}.onnx"
    teacher = onnx.load(str(teacher_path))
    x, y = data[args.split]
    path, about = compressed(name, target, seed, files, cache)
    row = {"split": args.split, "model": name, "target": target, "seed": seed,
           "epochs": args.epochs, "lr": lr, "variant": variant(args.tuned),
           "train_images": len(data["train"][1]), "macs_ratio": round(about["macs_ratio"], 4),
           "compress_seconds": about["seconds"], "compress_cached": about["cached"],
           "compress_method": about.get("method"), "compress_commit": about.get("commit"),
           "accuracy_unpruned": accuracy_ort(str(teacher_path), x, y),
           "accuracy_compress": accuracy_ort(str(path), x, y)}
    for part, prefix in (("finetune", "finetune"), ("scratch", "scratch")):
        if part not in args.parts:
            continue
        done = trained(part, path, teacher, data, lr, args, seed)
        row.update({"steps": done["steps"], f"{prefix}_seconds": done["seconds"],
                    f"{prefix}_cached": done["cached"], f"{prefix}_history": done["history"],
                    "settings": done["settings"],
                    f"accuracy_{'finetuned' if part == 'finetune' else 'scratch'}":
                        accuracy_ort(str(done["path"]), x, y)})
    return row


# ------------------------------------------------------------------------------ table
def _fmt(value, spec=".2f", none="—") -> str:
    return none if value is None else format(value, spec)


def _per_epoch(group: list[dict], key: str) -> str:
    """Held-out (validation) accuracy after each epoch, means over the seeds: '90.1 / 90.8'."""
    runs = [[e.get("accuracy") for e in r[key]] for r in group if r.get(key)]
    if not runs or any(a is None for run in runs for a in run):
        return "—"
    return " / ".join(f"{sum(col) / len(col):.2f}" for col in zip(*runs))


def table(rows: list[dict], split: str = "test") -> str:
    """Markdown: one line per (model, target, epochs, lr, settings) of ``split``, means over the
    seeds; the per-epoch column is the validation accuracy after each epoch (in the executor)."""
    rows = [r for r in rows if r["split"] == split]
    lines = ["| model | MACs | seeds | epochs (steps) | lr | settings | unpruned | compress | "
             "fine-tuned | fine-tuned per epoch (val) | from scratch | fine-tuned − unpruned | "
             "goal |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    def cell_of(r):
        return (r["model"], r["target"], r["epochs"], r["lr"], r.get("variant", ""),
                r.get("compress_method") or "")

    cells = sorted({cell_of(r) for r in rows}, key=lambda c: (c[0], -c[1], c[2], c[3], c[4], c[5]))
    for cell in cells:
        group = [r for r in rows if cell_of(r) == cell]

        def mean(key):
            values = [r[key] for r in group if key in r]
            return sum(values) / len(values) if values else None

        finetuned, allowed = mean("accuracy_finetuned"), GOALS.get(cell[1])
        gap = None if finetuned is None else finetuned - mean("accuracy_unpruned")
        goal = "" if allowed is None or gap is None else (
            f"≥ −{allowed}: " + ("met" if gap >= -allowed else "not met"))
        method = cell[5]
        lines.append(
            f"| {cell[0]} | {100 * mean('macs_ratio'):.1f}% | "
            f"{','.join(str(r['seed']) for r in group)} | {cell[2]} ({group[0].get('steps')}) | "
            f"{cell[3]:g} | {cell[4] or 'defaults'} | {mean('accuracy_unpruned'):.2f} | "
            f"{mean('accuracy_compress'):.2f}{f' ({method})' if method else ''} | "
            f"{_fmt(finetuned)} | {_per_epoch(group, 'finetune_history')} | "
            f"{_fmt(mean('accuracy_scratch'))} | {_fmt(gap, '+.2f')} | {goal} |")
    return "\n".join(lines) + "\n"


def merge_rows(*groups: list[dict]) -> list[dict]:
    """Rows of the same cell (``KEY``) combined, later fields over earlier ones (one run may
    have trained the fine-tune, another the scratch baseline of a cell)."""
    merged: dict[tuple, dict] = {}
    for rows in groups:
        for row in rows:
            key = tuple(row.get(k, "") for k in KEY)
            merged[key] = {**merged.get(key, {}), **row}
    return list(merged.values())


def merge(path: Path | None, new: list[dict]) -> list[dict]:
    old = json.loads(path.read_text())["rows"] if path and path.exists() else []
    return merge_rows(old, new)


def merge_files(paths: list[Path], out: Path | None) -> list[dict]:
    """``--merge``: the rows (combined per cell) and runs of several JSON files into ``out``."""
    docs = [json.loads(p.read_text()) for p in paths]
    rows = merge_rows(*(d["rows"] for d in docs))
    if out:
        write_json(out, {"merged_from": [str(p) for p in paths],
                         "runs": [r for d in docs for r in d.get("runs", [])], "rows": rows})
    return rows


def write_json(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def machine(threads: int) -> dict:
    import torch

    from onnxprune.runtime.bench import cpu_model

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": threads, "load_average_at_start": list(os.getloadavg())}


def load_data(cache: Path) -> tuple[dict, dict]:
    import fashion_mnist

    splits = fashion_mnist.load_splits()
    files = {}
    for kind in ("train", "val"):
        files[kind] = str(cache / f"fashion_{kind}_full.npz")
        if not Path(files[kind]).exists():
            np.savez(files[kind], x=splits[kind][0], y=splits[kind][1])
    return splits, files


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vgg")
    parser.add_argument("--targets", default="0.5,0.25")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--lrs", default="0.01", help="fine-tuning (and scratch) learning rates")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--optimizer", choices=("sgd", "adamw"))
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--alpha", type=float)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--augment", action="store_true", help="random flip + crop")
    parser.add_argument("--parts", default="finetune,scratch",
                        help="what to train per cell: finetune, scratch or both")
    parser.add_argument("--no-scratch", action="store_true", help="= --parts finetune")
    parser.add_argument("--merge", type=Path, nargs="+",
                        help="only combine these JSON files (into --json) and print the table")
    parser.add_argument("--table-from", type=Path, nargs="+",
                        help="only print the table of these JSON files (and --table-out it)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-limit", type=int, help="smoke test: the first N training images")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/onnxprune_bench_finetune"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--table-out", type=Path)
    args = parser.parse_args(argv)
    args.parts = ("finetune",) if args.no_scratch else tuple(args.parts.split(","))
    args.tuned = {k: getattr(args, k) for k in TUNABLE if getattr(args, k) not in (None, False)}
    return args


def _print_row(r: dict) -> None:
    print(f"{r['model']} {r['target']} seed {r['seed']} lr {r['lr']}: unpruned "
          f"{r['accuracy_unpruned']:.2f} compress {r['accuracy_compress']:.2f} "
          f"fine-tuned {r.get('accuracy_finetuned', float('nan')):.2f} scratch "
          f"{r.get('accuracy_scratch', float('nan')):.2f} "
          f"({r.get('finetune_seconds', 0):.0f}+{r.get('scratch_seconds', 0):.0f} s)",
          file=sys.stderr, flush=True)


def _save(path: Path, about: dict, started: float, new: list[dict]) -> None:
    """This run (replacing its earlier record) and the rows merged into ``path``, atomically."""
    runs = json.loads(path.read_text()).get("runs", []) if path.exists() else []
    runs = [x for x in runs if x.get("started") != about["started"]]
    run = {**about, "seconds": round(time.monotonic() - started, 1),
           "load_average_at_save": list(os.getloadavg())}
    write_json(path, {"runs": [*runs, run], "rows": merge(path, new)})


def _emit(text: str, out: Path | None) -> int:
    print(text)
    if out:
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.merge or args.table_from:
        return _emit(table(merge_files(args.merge, args.json) if args.merge else
                           merge_rows(*(json.loads(p.read_text())["rows"]
                                        for p in args.table_from)), args.split), args.table_out)
    import torch

    torch.set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    data, files = load_data(args.cache)
    if args.train_limit:
        data["train"] = tuple(a[:args.train_limit] for a in data["train"])
    about = {"machine": machine(args.threads), "command": "python " + " ".join(
        ["tools/bench_finetune.py", *(sys.argv[1:] if argv is None else argv)]),
             "data": "Fashion-MNIST, tools/fashion_mnist.py: 55k train / 5k val / 10k test",
             "goals": {str(k): v for k, v in GOALS.items()},
             "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    started, new = time.monotonic(), []
    for name in args.models.split(","):
        for target in map(float, args.targets.split(",")):
            for seed in map(int, args.seeds.split(",")):
                for lr in map(float, args.lrs.split(",")):
                    new.append(run_cell(name, target, seed, lr, args, data, files, args.cache))
                    _print_row(new[-1])
                    if args.json:
                        _save(args.json, about, started, new)
    return _emit(table(merge(args.json, new) if args.json else new, args.split), args.table_out)


if __name__ == "__main__":
    raise SystemExit(main())
