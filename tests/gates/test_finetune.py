"""Fine-tuning a pruned graph in the executor: better accuracy, weights written back in place,
deterministic, resumable, and two torchrun (gloo) processes equal one with the same global batch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxprune.api import analyze, prune
from onnxprune.gates.config import FinetuneConfig
from onnxprune.gates.finetune import finetune, lr_at

ROOT = Path(__file__).resolve().parents[2]
VGG = ROOT / "models" / "vgg.onnx"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ft")
    teacher = onnx.load(str(VGG))
    groups = [g for g in analyze(VGG)["groups"] if g["prunable"]]
    pruned = prune(teacher, {g["id"]: list(range(0, g["channels"], 3)) for g in groups})
    onnx.save(pruned, str(folder / "p.onnx"))
    train = np.load(ROOT / "models" / "mnist_train.npz")
    test = np.load(ROOT / "models" / "mnist_test.npz")
    rng = np.random.default_rng(0)  # the files are sorted by class: take seeded subsets
    pick, held = rng.permutation(len(train["y"]))[:256], rng.permutation(len(test["y"]))[:300]
    x, y = train["x"][pick], train["y"][pick]
    np.savez(folder / "d.npz", x=x, y=y)
    return folder, teacher, pruned, (x, y), (test["x"][held], test["y"][held])


def _weights(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


CONFIG = FinetuneConfig(iterations=12, batch_size=32, lr=0.02, checkpoint_every=2)


def test_finetune_recovers_accuracy_and_keeps_the_graph(setup):
    _, teacher, pruned, (x, y), held = setup
    result = finetune(pruned, teacher, x, y, FinetuneConfig(epochs=3, batch_size=32, lr=0.003,
                                                             optimizer="adamw"), eval_set=held)
    assert result.steps == 24 and len(result.history) == 3
    assert result.history[1]["loss"] < result.history[0]["loss"]
    from onnxprune.gates.executor import TorchGraph
    from onnxprune.gates.finetune import accuracy

    start = accuracy(TorchGraph(pruned), *held, "cpu")
    assert result.history[-1]["accuracy"] > start + 5.0  # 24 steps, from near chance
    before, after = _weights(pruned), _weights(result.model)
    assert before.keys() == after.keys()
    assert all(before[k].dtype == after[k].dtype and before[k].shape == after[k].shape
               for k in before)
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    assert [n.name for n in result.model.graph.node] == [n.name for n in pruned.graph.node]
    onnx.checker.check_model(result.model, full_check=True)


def test_finetune_is_deterministic(setup):
    _, teacher, pruned, (x, y), _ = setup
    a = _weights(finetune(pruned, teacher, x, y, CONFIG).model)
    b = _weights(finetune(pruned, teacher, x, y, CONFIG).model)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_killed_finetune_resumes_to_the_same_result(setup, tmp_path):
    from onnxprune.gates.checkpoint import Checkpointer

    _, teacher, pruned, (x, y), _ = setup
    full = _weights(finetune(pruned, teacher, x, y, CONFIG).model)
    checkpointer = Checkpointer(tmp_path / "c.npz", "key")

    def kill_after_5(step, total, terms):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(pruned, teacher, x, y, CONFIG, progress=kill_after_5, checkpointer=checkpointer)
    resumed = finetune(pruned, teacher, x, y, CONFIG, checkpointer=checkpointer, resume=True)
    again = _weights(resumed.model)
    assert all(np.allclose(full[k], again[k], rtol=0, atol=1e-7) for k in full)


def test_schedule_warms_up_then_decays_to_zero():
    config = FinetuneConfig(lr=0.1, warmup=0.1)
    lrs = [lr_at(s, 100, config) for s in range(100)]
    assert lrs[0] < lrs[5] < lrs[9] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 0.001


def _cli(*args, nproc=None, cwd=None):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    prefix = [sys.executable, "-m", "onnxprune"] if nproc is None else [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={nproc}", "-m", "onnxprune"]
    return subprocess.run([*prefix, *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


def test_two_gloo_processes_equal_one_with_the_same_global_batch(setup, tmp_path):
    folder = setup[0]
    common = ["finetune", folder / "p.onnx", "--teacher", VGG, "--data", folder / "d.npz",
              "--iterations", "6", "--batch-size", "32", "--quiet", "--device", "cpu"]
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    single = _cli(*common, "-o", one / "f.onnx")
    assert single.returncode == 0, single.stderr[-2000:]
    double = _cli(*common, "-o", two / "f.onnx", nproc=2, cwd=two)
    assert double.returncode == 0, double.stderr[-2000:]
    assert sorted(p.name for p in two.iterdir()) == ["f.onnx"]  # rank 0 alone wrote, once
    a, b = _weights(onnx.load(str(one / "f.onnx"))), _weights(onnx.load(str(two / "f.onnx")))
    assert all(np.allclose(a[k], b[k], rtol=0, atol=1e-5) for k in a)
    assert any(not np.array_equal(a[k], _weights(setup[2])[k]) for k in a)  # it trained


@pytest.mark.skipif(shutil.which("true") is None, reason="needs a POSIX shell")
def test_cli_refuses_a_batch_that_does_not_split(setup, tmp_path):
    folder = setup[0]
    result = _cli("finetune", folder / "p.onnx", "--teacher", VGG, "--data", folder / "d.npz",
                  "-o", tmp_path / "f.onnx", "--batch-size", "512", "--quiet")
    assert result.returncode == 2 and "fewer than one batch" in result.stderr
    assert result.stderr.strip().count("\n") == 0 and not (tmp_path / "f.onnx").exists()


def test_without_a_teacher_cross_entropy_alone_trains(setup):
    from onnxprune.errors import OnnxPruneError

    _, teacher, pruned, (x, y), _ = setup
    config = FinetuneConfig(epochs=3, batch_size=32, lr=0.01, optimizer="adamw")
    result = finetune(pruned, None, x, y, config)
    assert all(r["kd"] == 0.0 and r["ce"] == r["loss"] for r in result.history)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    distilled = finetune(pruned, teacher, x, y, config)
    assert distilled.history[0]["kd"] > 0.0
    assert distilled.history[0]["loss"] != result.history[0]["loss"]

    with pytest.raises(OnnxPruneError, match="needs labels"):
        finetune(pruned, None, x, None, CONFIG)


def _clip_graph():
    """x -> Conv(1->4, 3x3) -> Clip(min, max: 0-d initializers) -> GAP -> Flatten -> Gemm(4->3)."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.zeros(4, np.float32), "b"),
             numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
             numpy_helper.from_array(np.array(0.5, np.float32), "hi"),
             numpy_helper.from_array(rng.normal(size=(3, 4)).astype(np.float32), "fw"),
             numpy_helper.from_array(np.zeros(3, np.float32), "fb")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1],
                                   kernel_shape=[3, 3]),
             helper.make_node("Clip", ["c", "lo", "hi"], ["r"], name="clip"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "clip", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["n", 1, 8, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, ["n", 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_zero_dim_constants_stay_fixed_while_the_weights_train():
    model = _clip_graph()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    result = finetune(model, model, x, y, FinetuneConfig(iterations=8, batch_size=16, lr=0.5,
                                                         weight_decay=0.1))
    before, after = _weights(model), _weights(result.model)
    assert before["lo"] == after["lo"] and before["hi"] == after["hi"]
    assert not np.array_equal(before["w"], after["w"])
    assert not np.array_equal(before["fw"], after["fw"])


def test_cli_reports_accuracy_before_after_pruning_per_epoch_and_after(setup, tmp_path):
    import json

    folder = setup[0]
    x, y = setup[4]
    np.savez(tmp_path / "held.npz", x=x, y=y)
    args = ["finetune", folder / "p.onnx", "--teacher", VGG, "--data", folder / "d.npz",
            "--eval-data", tmp_path / "held.npz", "--epochs", "2", "--batch-size", "32",
            "--lr", "0.003", "--optimizer", "adamw", "--quiet", "--device", "cpu",
            "-o", tmp_path / "f.onnx", "--report", tmp_path / "r.json"]
    result = _cli(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert [e["epoch"] for e in report["epochs"]] == [1, 2]
    assert all(e["accuracy"] is not None for e in report["epochs"])  # held-out, per epoch
    before, pruned = report["accuracy_before_pruning"], report["accuracy_after_pruning"]
    after = report["accuracy_after_finetuning"]
    assert before == report["accuracy_teacher"] > pruned  # pruned to a third of the channels
    assert after > pruned + 5.0
    assert abs(after - report["epochs"][-1]["accuracy"]) < 1.0  # ONNX Runtime ≈ the executor
    table = result.stdout
    assert f"accuracy before pruning     {before:.2f}%" in table
    assert f"accuracy after pruning      {pruned:.2f}% ({pruned - before:+.2f} points)" in table
    for epoch in report["epochs"]:
        assert f"fine-tuning epoch {epoch['epoch']}" in table
        assert f"held-out {epoch['accuracy']:.2f}%" in table
    assert f"accuracy after fine-tuning  {after:.2f}% ({after - before:+.2f} points)" in table


def test_alpha_weights_the_distillation_term_and_the_cli_checks_its_range(setup, tmp_path):
    from onnxprune.finetuning import FinetuneRun, gate_config

    run = FinetuneRun(pruned="p.onnx", teacher="t.onnx", data="d.npz", output="o.onnx",
                      alpha=0.25)
    assert gate_config(run, image_folder=False).alpha == 0.25
    folder = setup[0]
    result = _cli("finetune", folder / "p.onnx", "--teacher", VGG, "--data", folder / "d.npz",
                  "-o", tmp_path / "f.onnx", "--alpha", "1.5")
    assert result.returncode == 2
    assert "--alpha" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "f.onnx").exists()
