"""``compress --finetune-iterations``: fine-tuning after pruning, reported before and after."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxprune.pipeline import CompressConfig, compress, format_compress

ROOT = Path(__file__).resolve().parent.parent


def test_compress_then_finetune_reports_each_stage(tmp_path):
    train, test = np.load(ROOT / "models" / "mnist_train.npz"), np.load(ROOT / "models" / "mnist_test.npz")
    pick = np.random.default_rng(0).permutation(len(train["y"]))[:512]
    held = np.random.default_rng(1).permutation(len(test["y"]))[:300]
    np.savez(tmp_path / "d.npz", x=train["x"][pick], y=train["y"][pick])
    np.savez(tmp_path / "t.npz", x=test["x"][held], y=test["y"][held])
    report = compress(CompressConfig(
        model=str(ROOT / "models" / "vgg.onnx"), output=str(tmp_path / "o.onnx"), target=0.25,
        data=str(tmp_path / "d.npz"), eval_data=str(tmp_path / "t.npz"), method="l1",
        recalibrate=False, finetune_iterations=24, quiet=True, device="cpu"))
    ft = report["finetune"]
    assert ft["steps"] == 24 and ft["epochs"]
    assert ft["accuracy_after_finetuning"] == report["accuracy_after"]
    assert ft["accuracy_after_finetuning"] > ft["accuracy_after_pruning"] + 5.0
    assert report["macs_ratio"] <= 0.25
    assert report["accuracy_before"] > ft["accuracy_after_pruning"]  # before pruning, in the JSON
    assert all("accuracy" in epoch and "loss" in epoch for epoch in ft["epochs"])  # per epoch
    table = format_compress(report)
    assert f"accuracy before pruning     {report['accuracy_before']:.2f}%" in table
    assert f"accuracy after pruning      {ft['accuracy_after_pruning']:.2f}%" in table
    for epoch in ft["epochs"]:  # one row per epoch: its loss terms and held-out accuracy
        assert f"fine-tuning epoch {epoch['epoch']}" in table
        assert f"held-out {epoch['accuracy']:.2f}%" in table
    assert f"accuracy after fine-tuning  {ft['accuracy_after_finetuning']:.2f}%" in table
