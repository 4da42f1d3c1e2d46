"""Issue 12 end to end: ``compress --input-shape`` on the representative dynamic-size graphs; the
pruned model keeps its dynamic dims and runs at other sizes in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import realworld_archs as rw
import realworld_torch as rt
from click.testing import CliRunner

from onnxprune.cli import main

GRAPHS = {"yolov8_detector": rw.yolov8_detector, "ppocr_recognizer": rw.ppocr_recognizer,
          "nhwc_classifier": rw.nhwc_classifier,
          "opset9_computed_weights": rw.opset9_computed_weights}


def _run_ort(path, feeds):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _dims(model):
    return [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]


def _files(tmp_path, model, dims):
    """The model and 24 random samples of its input size on disk: (model, data, output) paths."""
    source, data = tmp_path / "m.onnx", tmp_path / "d.npz"
    onnx.save(model, str(source))
    np.savez(data, x=np.random.default_rng(0).standard_normal((24, *dims[1:])).astype(np.float32))
    return source, data, tmp_path / "p.onnx"


def _compress(tmp_path, model, input_name, dims, method, iterations, samples):
    """``compress`` through the CLI at ``--input-shape``: (source, output path, pruned model),
    the pruned model checked with ``full_check``."""
    source, data, out = _files(tmp_path, model, dims)
    argv = ["compress", str(source), "--data", str(data), "--input-shape",
            f"{input_name}:{','.join(map(str, dims))}", "--method", method, "--target", "0.6",
            "--iterations", str(iterations), "--batch-size", "8",
            "--calibration-samples", str(samples), "-o", str(out), "--quiet", "--json"]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output
    pruned = onnx.load(str(out))
    onnx.checker.check_model(pruned, full_check=True)
    return source, out, pruned


@pytest.mark.parametrize("method", ["l1", "autobot"])
@pytest.mark.parametrize("name", list(GRAPHS))
def test_compress_runs_with_input_shape(name, method, tmp_path):
    model, input_shapes, run_shapes = GRAPHS[name]()
    (input_name, dims), = input_shapes.items()
    source, out, pruned = _compress(tmp_path, model, input_name, dims, method, iterations=3,
                                    samples=16)
    assert _dims(pruned) == _dims(model)  # dynamic dims stay dynamic
    for shape in run_shapes:  # and it runs at other sizes
        feeds = {k: np.random.default_rng(1).standard_normal(v).astype(np.float32)
                 for k, v in shape.items()}
        assert [o.shape for o in _run_ort(out, feeds)] == [o.shape for o in _run_ort(source, feeds)]


TORCH_CASES = rt.cases()


@pytest.mark.parametrize("case", TORCH_CASES, ids=[rt.case_id(c) for c in TORCH_CASES])
def test_compress_runs_on_torch_exports(case, tmp_path):
    """The PyTorch-exported graphs (both exporters): autobot end to end, dynamic dims kept."""
    pytest.importorskip("torch")
    model, input_shapes, run_shapes = rt.export(*case)
    (input_name, dims), = input_shapes.items()
    source, out, pruned = _compress(tmp_path, model, input_name, dims, "autobot", iterations=2,
                                    samples=8)
    assert _dims(pruned) == _dims(model)
    feeds = {k: np.random.default_rng(1).standard_normal(v).astype(np.float32)
             for k, v in run_shapes[-1].items()}
    assert [o.shape for o in _run_ort(out, feeds)] == [o.shape for o in _run_ort(source, feeds)]


def test_without_input_shape_the_error_names_the_flag(tmp_path):
    model, _, _ = rw.yolov8_detector()
    source = tmp_path / "m.onnx"
    onnx.save(model, str(source))
    result = CliRunner().invoke(main, ["analyze", str(source)])
    assert result.exit_code == 2 and "--input-shape" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_bench_sizes_dynamic_dims_with_input_shape(tmp_path):
    model, input_shapes, _ = rw.ppocr_recognizer()
    source = tmp_path / "m.onnx"
    onnx.save(model, str(source))
    (name, dims), = input_shapes.items()
    result = CliRunner().invoke(main, ["bench", str(source), "--provider", "cpu", "--iterations",
                                       "2", "--warmup", "0", "--input-shape",
                                       f"{name}:{','.join(map(str, dims))}", "--json"])
    assert result.exit_code == 0, result.output


def test_npz_data_gives_the_shape_of_a_dynamic_model(tmp_path):
    model, input_shapes, _ = rw.ppocr_recognizer()
    (_, dims), = input_shapes.items()
    source, data, out = _files(tmp_path, model, dims)
    result = CliRunner().invoke(main, ["compress", str(source), "--data", str(data), "--method",
                                       "l1", "--calibration-samples", "16", "-o", str(out),
                                       "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    import json

    report = json.loads(result.stdout)
    assert report["settings"]["input_shapes"] == {"x": [1, *dims[1:]]}
    assert report["macs_after"] < report["macs_before"]
