"""ONNX Runtime sessions without the CPU memory arena give the same outputs (issue 13: compress
validates large inputs that way, so a run holds only its live tensors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxprune.data import Dataset
from onnxprune.runtime.session import create_session
from onnxprune.runtime.validate import validate_models

ROOT = Path(__file__).resolve().parents[2]


def test_a_session_without_the_arena_gives_the_same_outputs():
    model = str(ROOT / "models" / "resnet.onnx")
    x = np.load(ROOT / "models" / "mnist_test.npz")["x"][:8].astype(np.float32)
    plain, lean = create_session(model, "cpu"), create_session(model, "cpu", memory_arena=False)
    assert not lean.session.get_session_options().enable_cpu_mem_arena
    assert plain.session.get_session_options().enable_cpu_mem_arena
    name = plain.session.get_inputs()[0].name
    np.testing.assert_array_equal(plain.session.run(None, {name: x})[0],
                                  lean.session.run(None, {name: x})[0])
    test = np.load(ROOT / "models" / "mnist_test.npz")
    data = Dataset(test["x"][:64], test["y"][:64])
    a = validate_models(model, model, data, provider="cpu", allow_small_eval=True)
    b = validate_models(model, model, data, provider="cpu", allow_small_eval=True,
                        memory_arena=False)
    assert a["accuracy_original"] == b["accuracy_original"] and b["agreement"] == 1.0
