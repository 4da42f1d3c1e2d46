"""Benchmark: ``onnxprune compress`` end to end on ImageNet-sized models (issue 13).

Each case runs ``python -m onnxprune compress`` as a subprocess and records its wall time, the
wall time per phase (from the timestamps of its ``--progress`` log lines, see ``PHASE_METHOD``),
its peak RSS (``os.wait4``'s ``ru_maxrss`` of the child, and the largest RSS of its process tree
polled from /proc), the RSS at each phase, the MAC fraction of the pruned model and the load.

Models (built here, exported to ``--work``): ``resnet50`` and ``mobilenet_v2`` of
``tools/resnet50.py`` at 3x224x224, and ``vgg320``, a ~1.3-GMAC VGG-style classifier at 3x320x320
(data-free only). Cases: ``datafree`` (no --data) and ``folder`` (a generated folder of random
JPEG images in class sub-folders, with ``--preset imagenet``).

    python tools/bench_scale.py --smoke                          # 2 iterations, small batch
    python tools/bench_scale.py --models resnet50 --cases datafree --iterations 10 \\
        --json benchmarks/scale_cpu.json                         # one case, merged into the JSON

Settings not given stay compress's defaults; every setting passed is recorded in the JSON.
A run that exceeds ``--timeout`` is killed and recorded with the phase it was in and its RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

import resnet50 as imagenet_models  # noqa: E402

from onnxprune.gates.config import GateConfig  # noqa: E402

PHASE_METHOD = (
    "compress --progress prints a line per tenth of each long phase (the first at its first "
    "update); a phase's wall time runs from its first line to its last (done == total), and "
    "'after <phase>' from there to the next phase's first line or the end of the process: the "
    "work without progress output (selection and surgery after gate training, validation and "
    "saving after recalibration) and the first step of the next phase, done before that phase's "
    "first line (e.g. recalibration's first layer); 'startup' is from the start of the process "
    "to the first progress line (model load, analysis, data loading). Peak RSS per phase uses "
    "the same spans")
LINE = re.compile(r"^(?P<label>[A-Za-z][\w -]*?): (?P<done>\d+)/(?P<total>\d+)")


# ---- models -----------------------------------------------------------------------------------

class VGG320(nn.Module):
    """Six 3x3 conv+BN+ReLU stages with max pooling, global average pool, 1000-class head."""

    WIDTHS = (24, 48, 96, 192, 384, 384)

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers, cin = [], 3
        for i, width in enumerate(self.WIDTHS):
            layers += [nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            if i < len(self.WIDTHS) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = width
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.fc(torch.flatten(x, 1))


MODELS = {  # name -> (builder, input size)
    "resnet50": (imagenet_models.resnet50, 224),
    "mobilenet_v2": (imagenet_models.mobilenet_v2, 224),
    "vgg320": (VGG320, 320),
}
CASES = {"resnet50": ("datafree", "folder"), "mobilenet_v2": ("datafree", "folder"),
         "vgg320": ("datafree",)}


def build_model(name: str, work: Path) -> Path:
    """Export ``name`` (random weights, randomised BN statistics) once into ``work``."""
    path = work / f"{name}.onnx"
    if not path.exists():
        builder, size = MODELS[name]
        torch.manual_seed(0)
        model = imagenet_models.randomize_bn(builder())
        tmp = work / f"{name}.tmp.onnx"
        imagenet_models.export_onnx(model, tmp, size=size)
        onnx.checker.check_model(str(tmp))
        os.replace(tmp, path)
    return path


def build_folder(work: Path, images: int, classes: int = 10, seed: int = 0) -> Path:
    """``images`` random-noise JPEGs (sides 256..400) in ``classes`` sub-folders, made once.

    The folders are named by ImageNet label (0, 100, 200, ...), which compress maps to the
    1000-class head without a class list."""
    from PIL import Image

    folder = work / f"imagenet_labels_{images}"
    done = folder / ".complete"
    if done.exists():
        return folder
    rng = np.random.default_rng(seed)
    for i in range(images):
        sub = folder / str((i % classes) * (1000 // classes))
        sub.mkdir(parents=True, exist_ok=True)
        h, w = rng.integers(256, 401, size=2)
        pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(sub / f"img_{i:05d}.jpg", quality=90)
    done.write_text(str(images))
    return folder


# ---- one run ----------------------------------------------------------------------------------

def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants (DataLoader workers), from /proc."""
    total, stack, seen = 0, [pid], set()
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/statm") as handle:
                total += int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as handle:
                    stack += [int(c) for c in handle.read().split()]
        except (OSError, ValueError):
            continue
    return total


class Watch:
    """Reads the child's stderr with timestamps and polls its RSS, tagged with the phase."""

    def __init__(self, proc: subprocess.Popen, start: float, log: Path):
        self.proc, self.start, self.log = proc, start, log
        self.phase = "startup"
        self.transitions: list[tuple[float, str]] = [(0.0, "startup")]
        self.events: list[tuple[float, str, int, int]] = []
        self.rss: dict[str, int] = {}
        self.peak = 0
        self.finished = False  # set by the waiter (a poll() here would reap the child)
        self.lines: list[str] = []
        self.threads = [threading.Thread(target=self._read, daemon=True),
                        threading.Thread(target=self._poll, daemon=True)]
        for t in self.threads:
            t.start()

    def _read(self) -> None:
        with open(self.log, "w") as out:
            for raw in self.proc.stderr:
                now = time.monotonic() - self.start
                line = raw.rstrip("\n")
                out.write(f"{now:9.2f} {line}\n")
                out.flush()
                self.lines.append(line)
                match = LINE.match(line)
                if match:
                    done, total = int(match["done"]), int(match["total"])
                    self.events.append((now, match["label"], done, total))
                    self._enter(now, match["label"])
                    if done == total:  # what follows, until the next phase, has no progress
                        self._enter(now, f"after {match['label']}")

    def _enter(self, now: float, phase: str) -> None:
        if phase != self.phase:
            self.phase = phase
            self.transitions.append((now, phase))

    def _poll(self) -> None:
        while not self.finished:
            rss = _tree_rss(self.proc.pid)
            self.peak = max(self.peak, rss)
            self.rss[self.phase] = max(self.rss.get(self.phase, 0), rss)
            time.sleep(0.25)

    def join(self) -> None:
        for t in self.threads:
            t.join(timeout=5)


def phases(transitions, end: float) -> dict[str, float]:
    """Seconds per phase (see PHASE_METHOD), in the order the phases started."""
    out: dict[str, float] = {}
    for (t, label), nxt in zip(transitions, [*transitions[1:], (end, None)]):
        out[label] = round(out.get(label, 0.0) + nxt[0] - t, 2)
    return out


def run_case(model: str, case: str, args, work: Path) -> dict:
    path = build_model(model, work)
    out_dir = work / "_".join(filter(None, (model, case, args.tag)))
    out_dir.mkdir(exist_ok=True)
    report_path = out_dir / "report.json"
    report_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "onnxprune", "compress", str(path), "-o",
           str(out_dir / "pruned.onnx"), "--report", str(report_path), "--progress", "--force"]
    settings = {}
    for flag, value in (("--iterations", args.iterations), ("--batch-size", args.batch_size),
                        ("--calibration-samples", args.calibration_samples),
                        ("--device", args.device), ("--method", args.method),
                        ("--memory-budget", args.memory_budget),
                        ("--refit-rounds", args.refit_rounds),
                        ("--refit-weighting", args.refit_weighting)):
        if value is not None:
            cmd += [flag, str(value)]
            settings[flag.lstrip("-")] = value
    if case == "folder":
        folder = build_folder(work, args.images)
        cmd += ["--data", str(folder), "--preset", "imagenet"]
        settings.update(data=f"{args.images} random JPEGs (256..400 px sides), 10 class folders", preset="imagenet")
    load_before = os.getloadavg()
    start = time.monotonic()
    env = dict(os.environ, PYTHONPATH=str(args.source))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=str(args.source), env=env, start_new_session=True)
    watch = Watch(proc, start, out_dir / "progress.log")
    killed = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - start > args.timeout and not killed:
            killed = True
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.2)
    wall = time.monotonic() - start
    watch.finished = True
    proc.returncode = os.waitstatus_to_exitcode(status)
    watch.join()
    row = {"model": model, "case": case, "command": " ".join(Path(c).name if "/" in c else c
                                                             for c in cmd[1:]),
           "settings": settings, "returncode": proc.returncode, "wall_s": round(wall, 1),
           "timed_out": killed, "phase_at_end": watch.phase,
           "phase_s": phases(watch.transitions, wall),
           "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
           "peak_tree_rss_mb": round(watch.peak / 2**20, 1),
           "phase_peak_rss_mb": {k: round(v / 2**20, 1) for k, v in watch.rss.items()},
           "load_before": [round(v, 2) for v in load_before],
           "load_after": [round(v, 2) for v in os.getloadavg()]}
    if proc.returncode != 0 and not killed:
        row["stderr_tail"] = watch.lines[-5:]
    if report_path.exists():
        report = json.loads(report_path.read_text())
        row.update(macs_before=report.get("macs_before"), macs_after=report.get("macs_after"),
                   report_seconds=report.get("seconds"))
        if report.get("macs_before"):
            row["mac_fraction"] = round(report["macs_after"] / report["macs_before"], 4)
        row.update({k: v for k, v in report.items() if "timing" in k or "phases" in k})
    gate = [e for e in watch.events if e[1] == "gate training"]
    if len(gate) >= 2 and gate[-1][2] > gate[0][2]:
        row["gate_s_per_iteration"] = round(
            (gate[-1][0] - gate[0][0]) / (gate[-1][2] - gate[0][2]), 2)
        batch = args.batch_size or GateConfig.batch_size
        row["gate_training_s_projected_at_200x64"] = round(
            row["gate_s_per_iteration"] * GateConfig.batch_size / batch * GateConfig.iterations)
    return row


# ---- table ------------------------------------------------------------------------------------

TABLE_START, TABLE_END = "<!-- scale-table -->", "<!-- /scale-table -->"
DATA = {"datafree": "data-free", "folder": "image folder"}
NAMES = {"resnet50": "ResNet-50 224²", "mobilenet_v2": "MobileNetV2 224²",
         "vgg320": "VGG 320², 1.26 GMACs"}


def _settings_cell(row: dict) -> str:
    given = {k: v for k, v in row.get("settings", {}).items() if k not in ("data", "preset")}
    return ", ".join(f"--{k} {v}" for k, v in given.items()) or "defaults"


def _phases_cell(row: dict) -> str:
    spans = sorted(row.get("phase_s", {}).items(), key=lambda kv: -kv[1])
    return "; ".join(f"{k} {v:.0f} s" for k, v in spans[:4])


def table(runs: list[dict]) -> str:
    """One markdown row per run: what ran, its wall time by phase, peak RSS, MACs and load."""
    lines = ["| model | data | settings | commit | wall | longest phases | peak RSS | "
             "MACs kept | load before |", "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        if r.get("timed_out"):
            wall = f"killed at {r['wall_s']:.0f} s in {r['phase_at_end']} (time limit)"
        elif r["returncode"] < 0:  # a signal from outside the tool (e.g. stopped by hand)
            wall = f"killed from outside at {r['wall_s']:.0f} s in {r['phase_at_end']}"
        else:
            wall = f"{r['wall_s']:.0f} s" + ("" if r["returncode"] == 0
                                            else f" (exit {r['returncode']})")
        peak = max(r.get("peak_rss_mb", 0), r.get("peak_tree_rss_mb", 0)) / 1024
        macs = f"{r['mac_fraction']:.3f}" if r.get("mac_fraction") else "–"
        lines.append(f"| {NAMES.get(r['model'], r['model'])} | {DATA.get(r['case'], r['case'])} "
                     f"| {_settings_cell(r)} | {r.get('commit', '?')} | {wall} | "
                     f"{_phases_cell(r)} | {peak:.2f} GiB | {macs} | "
                     f"{r.get('load_before', ['?'])[0]} |")
    return "\n".join(lines) + "\n"


def write_table(args) -> int:
    runs = json.loads(args.table_from.read_text())["runs"]
    if args.tags is not None:
        order = args.tags.split(",")
        runs = sorted((r for r in runs if r.get("tag", "") in order),
                      key=lambda r: (order.index(r.get("tag", "")), r["model"], r["case"]))
    text = (f"JSON: `{args.table_from}`; `python tools/bench_scale.py --table-from "
            f"{args.table_from}" + (f" --tags {args.tags}" if args.tags is not None else "")
            + "`.\n\n" + table(runs))
    print(text, end="")
    if args.readme:
        readme = args.readme.read_text()
        start, end = readme.index(TABLE_START) + len(TABLE_START), readme.index(TABLE_END)
        args.readme.write_text(readme[:start] + "\n" + text + readme[end:])
    return 0


# ---- main -------------------------------------------------------------------------------------

def source_commit(source: Path) -> str:
    """The commit the measured package comes from: a ``.commit`` file (an exported tree), else
    git's HEAD, marked ``+dirty`` when the working tree has uncommitted changes to the package."""
    stamp = source / ".commit"
    if stamp.exists():
        return stamp.read_text().strip()
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=source, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "onnxprune"], cwd=source,
                               text=True, capture_output=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _key(row: dict) -> tuple:
    return (row["model"], row["case"], row.get("smoke", False), row.get("tag", ""),
            row.get("commit", ""))


def merge(path: Path, rows: list[dict], meta: dict) -> None:
    """Merge ``rows`` into the JSON at ``path`` by (model, case, smoke, tag, commit); written
    atomically, under a lock so that two runs of this tool may share one file."""
    import fcntl
    import hashlib
    import tempfile

    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"bench_scale_{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.exists() else {"runs": []}
        data["runs"] = [r for r in data.get("runs", []) if _key(r) not in set(map(_key, rows))]
        data["runs"] += rows
        data.update(meta)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--cases", nargs="*", choices=("datafree", "folder"),
                        default=["datafree", "folder"])
    parser.add_argument("--iterations", type=int, help="gate iterations [compress's default]")
    parser.add_argument("--batch-size", type=int, help="[compress's default]")
    parser.add_argument("--calibration-samples", type=int, help="[compress's default]")
    parser.add_argument("--device", help="[compress's default]")
    parser.add_argument("--method", help="[compress's default]")
    parser.add_argument("--memory-budget", help="[compress's default]")
    parser.add_argument("--refit-rounds", help="N or auto [compress's default]")
    parser.add_argument("--refit-weighting", help="[compress's default]")
    parser.add_argument("--images", type=int, default=1000, help="images in the folder case")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    parser.add_argument("--smoke", action="store_true",
                        help="2 iterations at batch 8, 32 calibration samples (a quick check)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/onnxprune_bench_scale"))
    parser.add_argument("--source", type=Path, default=ROOT,
                        help="the tree whose onnxprune package runs (e.g. a 'git archive' export "
                             "of one commit, with its id in a .commit file) [this repository]")
    parser.add_argument("--tag", default="",
                        help="names a variant of the settings; rows merge by model, case, smoke, tag, commit")
    parser.add_argument("--note", default="", help="free text stored with the runs")
    parser.add_argument("--json", type=Path, help="merge the results into this JSON")
    parser.add_argument("--table-from", type=Path,
                        help="print the markdown table of this JSON's runs instead of running")
    parser.add_argument("--tags", help="with --table-from: only runs of these comma-separated "
                                       "tags ('' for untagged), in this order")
    parser.add_argument("--readme", type=Path, help="with --table-from: rewrite the text "
                                                    f"between {TABLE_START} and {TABLE_END}")
    args = parser.parse_args(argv)
    if args.table_from:
        return write_table(args)
    if args.smoke:
        args.iterations = args.iterations or 2
        args.batch_size = args.batch_size or 8
        args.calibration_samples = args.calibration_samples or 32
    args.work.mkdir(parents=True, exist_ok=True)
    from onnxprune.runtime.bench import cpu_model

    rows = []
    for model in args.models:
        for case in args.cases:
            if case not in CASES[model]:
                continue
            commit = source_commit(args.source)  # what the child imports, at its start
            row = run_case(model, case, args, args.work)
            row.update(smoke=args.smoke, tag=args.tag, commit=commit, note=args.note)
            rows.append(row)
            print(json.dumps({k: row.get(k) for k in (
                "model", "case", "returncode", "wall_s", "timed_out", "phase_at_end", "phase_s",
                "peak_rss_mb", "peak_tree_rss_mb", "mac_fraction", "gate_s_per_iteration",
                "load_before")}), flush=True)
            if args.json:
                merge(args.json, [row], {
                    "tool": "tools/bench_scale.py", "phase_timing": PHASE_METHOD,
                    "cpu": cpu_model(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "paper_settings": "200 iterations at batch 64 (compress's defaults)",
                    "projection": "gate_training_s_projected_at_200x64 = the measured seconds "
                                  "per iteration x 64 / batch x 200, an estimate linear in "
                                  "the batch, not a measurement"})
    return 0 if all(r["returncode"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
