"""The peer side of the Fashion-MNIST yardstick (``tools/bench_yardstick.py``): onnxsim 0.8.x.

``onnxsim.pruning.apply_structured_pruning`` with L2 filter norms, per layer (``l2``) or global
(``l2g``, ``global_sparsity=True``), and ``apply_structured_wanda_pruning`` (``wanda``, weight x
activation norms), run in a SEPARATE virtualenv through a subprocess (this file with
``--peer-worker JOB``; ``--peer-python``, never a project dependency). Its sparsity is bisected
until its MACs (counted by onnxprune's one MAC formula) are the largest at or under the same
budget; then each of its recoveries is applied: none, ``correct_bias`` (per-channel bias
correction) and ``insert_identity_bn`` + ``calibrate_recovered_bn`` (BN re-estimation), with
calibration batches from the training split.

The worker imports only numpy, onnx, onnxruntime and onnxsim (no onnxprune, no torch); the
functions that measure (``macs_of``, ``accuracy_ort``, ``peer_rows``) run on our side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PEER_METHODS = ("l2", "wanda", "l2g")  # l2g: L2 with global_sparsity=True
PEER_RECOVERIES = ("none", "bias", "bn")
PEER_PYTHON = "/tmp/peer-venv/bin/python"


def peer_worker(job: dict) -> dict:
    """Runs in the peer's virtualenv (numpy, onnx, onnxruntime, onnxsim; no onnxprune, no torch).

    ``job``: model, method (l2|wanda), sparsities, out_dir, calib (npz), seed, batches, batch,
    recoveries (applied to each output; 'none' writes the plain pruned model)."""
    import onnx
    import onnxsim
    from onnxsim import pruning

    data = np.load(job["calib"])
    x = data["x"]
    rng = np.random.default_rng(job.get("seed", 0))
    idx = rng.choice(len(x), size=min(len(x), job["batches"] * job["batch"]), replace=False)
    original = onnx.load_model(job["model"])
    name = original.graph.input[0].name
    calib = [{name: np.ascontiguousarray(x[idx[i:i + job["batch"]]])}
             for i in range(0, len(idx), job["batch"])]
    out = {"onnxsim": getattr(onnxsim, "__version__", "?"), "files": []}
    for k, sparsity in enumerate(job["sparsities"]):
        started = time.monotonic()
        entry = {"sparsity": sparsity, "files": {}, "errors": {}}
        try:
            if job["method"] in ("l2", "l2g"):
                pruned = pruning.apply_structured_pruning(
                    onnx.load_model(job["model"]), sparsity=sparsity, importance_norm="l2",
                    global_sparsity=job["method"] == "l2g")
            else:
                pruned = pruning.apply_structured_wanda_pruning(
                    onnx.load_model(job["model"]), calibration_data=calib, sparsity=sparsity,
                    importance_norm="l2", providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - reported, the benchmark goes on
            entry["errors"]["prune"] = repr(exc)[:300]
            out["files"].append(entry)
            continue
        entry["prune_seconds"] = round(time.monotonic() - started, 2)
        for recovery in job.get("recoveries", ["none"]):
            path = Path(job["out_dir"]) / f"{job['method']}_{k}_{recovery}.onnx"
            started = time.monotonic()
            try:
                if recovery == "none":
                    model = pruned
                elif recovery == "bias":
                    model = onnxsim.correct_bias(original, pruned, calibration_data=calib,
                                                 providers=["CPUExecutionProvider"])
                elif recovery == "bn":
                    recovered, _ = onnxsim.insert_identity_bn(pruned)
                    model = onnxsim.calibrate_recovered_bn(
                        recovered, calibration_data=calib, target_model=original,
                        providers=["CPUExecutionProvider"])
                else:
                    raise ValueError(f"unknown recovery {recovery}")
                onnx.save_model(model, str(path))
                entry["files"][recovery] = str(path)
                entry[f"{recovery}_seconds"] = round(time.monotonic() - started, 2)
            except Exception as exc:  # noqa: BLE001
                entry["errors"][recovery] = repr(exc)[:300]
        out["files"].append(entry)
    return out


def call_peer(python: str, job: dict) -> dict:
    proc = subprocess.run([python, str(Path(__file__).resolve()), "--peer-worker", json.dumps(job)],
                          capture_output=True, text=True, timeout=3600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"peer worker failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def macs_of(path: str) -> int:
    from onnxprune.api import analyze

    return int(analyze(path)["macs"])


def peer_bisect(python: str, model: str, macs_before: int, target: float, calib: str,
                folder: Path, method: str = "l2", rounds: int = 3, width: int = 12) -> dict:
    """Sparsity of the peer's ``method`` whose MACs are the largest at or under ``target``: rounds
    of ``width`` sparsities each (one subprocess per round), narrowing the bracket. Each method
    is bisected on its own: Wanda does not match the same chains as L2 on every model."""
    lo, hi = 0.0, 0.99
    seen: dict[float, float] = {}
    for _ in range(rounds):
        grid = [round(lo + (hi - lo) * (i + 1) / (width + 1), 6) for i in range(width)]
        res = call_peer(python, {"model": model, "method": method, "sparsities": grid,
                                 "out_dir": str(folder), "calib": calib, "seed": 0, "batches": 2,
                                 "batch": 32, "recoveries": ["none"]})
        for entry in res["files"]:
            if "none" in entry["files"]:
                seen[entry["sparsity"]] = macs_of(entry["files"]["none"]) / macs_before
        under = [s for s, f in seen.items() if f <= target]
        over = [s for s, f in seen.items() if f > target]
        if not under:
            break
        lo = max(over) if over else 0.0
        hi = min(under)
    under = {s: f for s, f in seen.items() if f <= target}
    if not under:
        return {"reachable": False, "min_fraction": min(seen.values()) if seen else None,
                "sparsity": max(seen, key=lambda s: -seen[s]) if seen else None}
    best = max(under.values())
    sparsity = min(s for s, f in under.items() if f == best)
    return {"reachable": True, "sparsity": sparsity, "fraction": best}




def accuracy_ort(path: str, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    pred = np.concatenate([sess.run(None, {name: x[i:i + 1000]})[0].argmax(1)
                           for i in range(0, len(x), 1000)])
    return float((pred == y).mean() * 100)


def peer_rows(name: str, model: str, target: float, args, data: dict, folder: Path,
              unpruned: float, macs_before: int, x_eval, y_eval, log) -> None:
    """The peer's rows of one model and target: each ``args.peer`` method bisected to the
    budget once, then every seed with every recovery; ``log(row)`` gets each row."""
    found_by, bisect_seconds = {}, {}
    for method in args.peer:
        started = time.monotonic()
        found_by[method] = peer_bisect(args.peer_python, model, macs_before, target,
                                       data["train"], folder, method)
        bisect_seconds[method] = time.monotonic() - started
    for seed in args.seeds:
        for method in args.peer:
            found = found_by[method]
            started = time.monotonic()
            res = call_peer(args.peer_python, {
                "model": model, "method": method, "sparsities": [found["sparsity"]],
                "out_dir": str(folder), "calib": data["train"], "seed": seed,
                "batches": args.peer_batches, "batch": 32, "recoveries": list(PEER_RECOVERIES)})
            entry = res["files"][0]
            seconds = time.monotonic() - started + bisect_seconds[method] / len(args.seeds)
            for recovery in PEER_RECOVERIES:
                row = {"model": name, "target": target, "method": f"peer-{method}",
                       "recalibration": recovery, "seed": seed, "side": "peer",
                       "peer_sparsity": found["sparsity"], "reachable": found["reachable"],
                       "accuracy_before": unpruned, "macs_before": macs_before,
                       "seconds": round(seconds, 1), "onnxsim": res.get("onnxsim")}
                path = entry["files"].get(recovery)
                if path is None:
                    row.update({"accuracy_after": float("nan"), "macs_ratio": float("nan"),
                                "macs_ok": False, "error": entry["errors"].get(
                                    recovery, entry["errors"].get("prune"))})
                else:
                    macs = macs_of(path)
                    row.update({"accuracy_after": accuracy_ort(path, x_eval, y_eval),
                                "macs_after": macs, "macs_ratio": macs / macs_before,
                                "macs_ok": bool(macs <= target * macs_before)})
                log(row)


if __name__ == "__main__":
    if sys.argv[1:2] != ["--peer-worker"] or len(sys.argv) != 3:
        print("usage: yardstick_peer.py --peer-worker JOB_JSON", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(peer_worker(json.loads(sys.argv[2]))))
