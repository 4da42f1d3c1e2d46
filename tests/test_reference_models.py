"""The reference MNIST models in models/: valid files, real accuracy, exact MAC counts.

Never trains: the files come from ``python tools/build_models.py``.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import refmodels  # tools/ is put on sys.path by conftest.py
from onnxprune.api import analyze

EXPORTS = {"torchscript": "{name}.onnx", "dynamo": "{name}_dynamo.onnx"}
CASES = [(name, exporter) for name in refmodels.MODELS for exporter in EXPORTS]
IDS = [f"{n}-{e}" for n, e in CASES]
MIN_ACC = 0.97


def model_path(models_dir, name, exporter):
    return models_dir / EXPORTS[exporter].format(name=name)


@pytest.fixture(scope="module")
def test_split(models_dir):
    with np.load(models_dir / "mnist_test.npz") as data:
        return data["x"], data["y"]


@pytest.mark.parametrize("name,exporter", CASES, ids=IDS)
def test_file_is_valid_onnx(models_dir, name, exporter):
    path = model_path(models_dir, name, exporter)
    assert path.is_file(), f"{path} missing; run python tools/build_models.py"
    if exporter == "dynamo":
        data = path.parent / (path.name + ".data")
        assert data.is_file() and data.stat().st_size > 0
        proto = onnx.load_model(str(path), load_external_data=False)
        assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    model = onnx.load_model(str(path))
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    onnx.checker.check_model(str(path), full_check=True)


@pytest.mark.parametrize("name,exporter", CASES, ids=IDS)
def test_onnxruntime_accuracy(models_dir, test_split, name, exporter):
    import onnxruntime as ort

    x, y = test_split
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(model_path(models_dir, name, exporter)), opts,
                                providers=["CPUExecutionProvider"])
    logits = np.concatenate([sess.run(["logits"], {"input": x[i:i + 500]})[0]
                             for i in range(0, len(x), 500)])
    assert logits.shape == (len(x), 10)
    acc = float((logits.argmax(1) == y).mean())
    assert acc >= MIN_ACC, f"{name} ({exporter}) test accuracy {acc:.4f} < {MIN_ACC}"


@pytest.fixture(scope="module")
def torch_macs():
    return {name: refmodels.torch_macs(refmodels.build(name)) for name in refmodels.MODELS}


@pytest.mark.parametrize("name,exporter", CASES, ids=IDS)
def test_macs_match_torch_flop_counter(models_dir, torch_macs, name, exporter):
    summary = analyze(model_path(models_dir, name, exporter))
    assert summary["params"] > 0
    assert summary["macs"] == torch_macs[name]


def test_data_files(models_dir):
    for split, count in (("train", 4000), ("test", 1000)):
        with np.load(models_dir / f"mnist_{split}.npz") as data:
            x, y = data["x"], data["y"]
        assert x.dtype == np.float32 and x.shape == (count, 1, 28, 28)
        assert y.dtype == np.int64 and y.shape == (count,)
        assert y.min() == 0 and y.max() == 9
        assert np.bincount(y, minlength=10).tolist() == [count // 10] * 10
        # normalised with MNIST mean/std: background pixels at -0.1307/0.3081
        assert np.isclose(x.min(), -refmodels.MEAN / refmodels.STD, atol=1e-5)
        assert np.isclose(x.max(), (1 - refmodels.MEAN) / refmodels.STD, atol=1e-5)


def test_split_is_reproducible(models_dir):
    (_, _), (x_test, y_test) = refmodels.load_split()
    with np.load(models_dir / "mnist_test.npz") as data:
        np.testing.assert_array_equal(data["y"], y_test)
        np.testing.assert_array_equal(data["x"], x_test)


@pytest.mark.parametrize("exporter", EXPORTS)
def test_fixture_structure(models_dir, exporter):
    """The features each family exists for: Flatten->Gemm over a spatial map, residual Adds."""
    ops = {name: [n.op_type for n in onnx.load_model(
        str(model_path(models_dir, name, exporter)), load_external_data=False).graph.node]
        for name in refmodels.MODELS}
    vgg = onnx.load_model(str(model_path(models_dir, "vgg", exporter)))
    first_gemm = next(n for n in vgg.graph.node if n.op_type == "Gemm")
    fc1 = next(t for t in vgg.graph.initializer if t.name == first_gemm.input[1])
    assert list(fc1.dims) == [64, 64 * 3 * 3]
    assert "GlobalAveragePool" not in ops["vgg"] and "ReduceMean" not in ops["vgg"]
    assert ops["resnet"].count("Add") == 5
    assert ops["mobilenetv2"].count("Add") == 3
    dw = [n for n in onnx.load_model(str(model_path(models_dir, "mobilenetv2", exporter))).graph.node
          if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)]
    assert len(dw) == 5


# ------------------------------------------------------------ Fashion-MNIST yardstick (issue 14)
FASHION_CASES = [(name, exporter) for name in refmodels.FASHION_MODELS for exporter in EXPORTS]
FASHION_IDS = [f"fashion_{n}-{e}" for n, e in FASHION_CASES]
FASHION_MIN_ACC = 0.85  # on the embedded 1,000-image validation subset


def fashion_path(models_dir, name, exporter):
    return models_dir / ("fashion_" + EXPORTS[exporter].format(name=name))


@pytest.fixture(scope="module")
def fashion_val(models_dir):
    with np.load(models_dir / "fashion_val.npz") as data:
        return data["x"], data["y"]


@pytest.mark.parametrize("name,exporter", FASHION_CASES, ids=FASHION_IDS)
def test_fashion_file_is_valid_and_accurate(models_dir, fashion_val, name, exporter):
    import onnxruntime as ort

    path = fashion_path(models_dir, name, exporter)
    assert path.is_file(), f"{path} missing; run python tools/build_models.py --dataset fashion"
    assert path.stat().st_size < 10 * 2**20
    if exporter == "dynamo":
        proto = onnx.load_model(str(path), load_external_data=False)
        assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    model = onnx.load_model(str(path))
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)
    onnx.checker.check_model(str(path), full_check=True)
    x, y = fashion_val
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    logits = np.concatenate([sess.run(["logits"], {"input": x[i:i + 500]})[0]
                             for i in range(0, len(x), 500)])
    acc = float((logits.argmax(1) == y).mean())
    assert acc >= FASHION_MIN_ACC, f"fashion_{name} ({exporter}) val accuracy {acc:.4f}"


@pytest.mark.parametrize("name", list(refmodels.FASHION_MODELS))
def test_fashion_macs_match_torch_and_manifest(models_dir, name):
    import json

    manifest = json.loads((models_dir / "manifest.json").read_text())["fashion"]
    expected = refmodels.torch_macs(refmodels.build(name))
    assert manifest["models"][name]["torch_macs"] == expected
    for exporter in EXPORTS:
        assert analyze(fashion_path(models_dir, name, exporter))["macs"] == expected


def test_fashion_resnet56_is_56_layers_deep(models_dir):
    ops = [n.op_type for n in onnx.load_model(str(fashion_path(models_dir, "resnet56", "torchscript")),
                                              load_external_data=False).graph.node]
    # 55 3x3 convs + the Gemm = 56 weighted layers on the main path, plus 2 1x1 shortcuts
    assert ops.count("Conv") == 55 + 2 and ops.count("Gemm") == 1 and ops.count("Add") == 27


def test_fashion_subsets(models_dir):
    for name, count in (("fashion_train.npz", 2000), ("fashion_val.npz", 1000)):
        path = models_dir / name
        assert path.stat().st_size < 3 * 2**20
        with np.load(path) as data:
            x, y = data["x"], data["y"]
        assert x.dtype == np.float32 and x.shape == (count, 1, 28, 28)
        assert y.dtype == np.int64 and np.bincount(y, minlength=10).tolist() == [count // 10] * 10
