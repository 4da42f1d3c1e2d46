"""Issue 12: representative real-world graphs with dynamic H/W, analysed at ``--input-shape``
sizes, pruned equal to their masked reference at two input sizes."""

from __future__ import annotations

import onnx
import pytest
import realworld_archs as rw

from onnxprune.analysis.groups import analyze_channels
from onnxprune.analysis.summary import count_macs, summarize
from onnxprune.errors import OnnxPruneError
from onnxprune.inputshapes import parse_input_shapes

GRAPHS = {"yolov8_detector": rw.yolov8_detector, "ppocr_recognizer": rw.ppocr_recognizer,
          "nhwc_classifier": rw.nhwc_classifier,
          "opset9_computed_weights": rw.opset9_computed_weights}


@pytest.mark.parametrize("name", list(GRAPHS))
def test_representative_graph(name):
    model, input_shapes, run_shapes = GRAPHS[name]()
    analysis = rw.check_dynamic_plans(model, input_shapes, run_shapes, plans=3)
    share = rw.prunable_share(analysis)
    assert share >= 0.9, f"{name}: {share:.1%} of MACs prunable; barriers {analysis.barriers}"


def test_computed_weights_are_folded_and_fp16_stays_behind_cast():
    import numpy as np
    from archs import random_keep

    from onnxprune.surgery import prune_model

    model, input_shapes, _ = rw.opset9_computed_weights()
    analysis = analyze_channels(model, input_shapes=input_shapes)
    assert all(g.prunable for g in analysis.groups[:2]) and analysis.folded
    keep = random_keep(analysis, np.random.default_rng(1), skip=0.0)
    pruned = prune_model(model, keep, input_shapes=input_shapes)
    narrow = {t.name for t in pruned.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16}
    casts = [n for n in pruned.graph.node if n.op_type == "Cast" and n.input[0] in narrow]
    assert len(narrow) == 3 and len(casts) == 3  # two fp16 conv weights and one fp16 bias
    ops = {n.op_type for n in pruned.graph.node}
    assert not ops & {"ConstantOfShape", "Reshape"}  # the weight paths are initializers now
    assert {"Sum", "Gemm", "Flatten"} <= ops  # the rest of the graph as it was


def test_dynamic_spatial_dims_need_an_input_shape():
    model, input_shapes, _ = rw.yolov8_detector()
    with pytest.raises(OnnxPruneError, match=r"input 'images' has a dynamic dimension 'height' "
                                             r"at axis 2.*--input-shape images:D0,D1,D2,D3"):
        analyze_channels(model)
    with pytest.raises(OnnxPruneError, match="--input-shape"):
        summarize(model)
    small = count_macs(model, input_shapes=input_shapes)
    big = count_macs(model, input_shapes={"images": (1, 3, 128, 128)})
    assert big == 4 * small


def test_input_shape_mismatches_are_one_line_errors():
    model, _, _ = rw.yolov8_detector()
    cases = [({"images": (1, 3, 64)}, "has rank 3 but input 'images' has rank 4"),
             ({"images": (1, 4, 64, 64)}, "disagrees with the declared size 3"),
             ({"image": (1, 3, 64, 64)}, "'image', which is not an input")]
    for shapes, message in cases:
        with pytest.raises(OnnxPruneError, match=message):
            count_macs(model, input_shapes=shapes)
    assert count_macs(model, input_shapes={"": (1, 3, 64, 64)}) > 0  # bare: the only input


@pytest.mark.parametrize("values,expected", [
    (("images:1,3,320,320",), {"images": (1, 3, 320, 320)}),
    (("a:1,3,8,8", "b:1,4"), {"a": (1, 3, 8, 8), "b": (1, 4)}),
    (("input_1:0:1,224,224,3",), {"input_1:0": (1, 224, 224, 3)}),
    (("1,3,32,100",), {"": (1, 3, 32, 100)}),
])
def test_parse_input_shapes(values, expected):
    assert parse_input_shapes(values) == expected


@pytest.mark.parametrize("values,message", [
    (("images:1,3,a,4",), "dimension 'a' is not a positive integer"),
    (("images:1,3,0,4",), "dimension '0' is not a positive integer"),
    (("images:",), "no dimensions"),
    ((":1,3",), "empty input name"),
    (("x:1,2", "x:1,3"), "given twice"),
])
def test_parse_input_shapes_refuses_bad_syntax(values, message):
    with pytest.raises(OnnxPruneError, match=message):
        parse_input_shapes(values)


def test_bare_shape_needs_a_single_input():
    assert parse_input_shapes(("1,3,8,8",), ["x"]) == {"x": (1, 3, 8, 8)}
    with pytest.raises(OnnxPruneError, match="the model has 2 inputs"):
        parse_input_shapes(("1,3,8,8",), ["x", "y"])


def test_ir3_model_whose_initializers_are_not_inputs_is_accepted(tmp_path):
    from onnxprune.graph import load_model

    model, input_shapes, run_shapes = rw.opset9_computed_weights(ir_version=3)
    path = tmp_path / "ir3.onnx"
    onnx.save(model, str(path))
    loaded = load_model(path).model
    assert loaded.ir_version == 3
    rw.check_dynamic_plans(loaded, input_shapes, run_shapes, plans=2)


def test_stale_declared_shapes_are_dropped_with_a_note():
    """Declared shapes that inference contradicts (an exporter's -1, a stale channel count)."""
    from archs import Builder, head, random_feeds, run_ort, stem

    from onnxprune.surgery import masked_reference, prune_model

    b = Builder(3)
    y = stem(b, 6)
    model = b.model([b.op("Identity", [head(b, y, 6)])])
    dim = model.graph.output[0].type.tensor_type.shape.dim[0]
    dim.Clear()
    dim.dim_value = -1
    model.graph.value_info.append(onnx.helper.make_tensor_value_info(y, 1, [1, 7, 4, 4]))
    analysis = analyze_channels(model)
    assert analysis.groups[0].prunable
    keep = {analysis.groups[0].id: [0, 2, 5]}
    pruned = prune_model(model, keep)
    onnx.checker.check_model(pruned, full_check=True)
    feeds = random_feeds(model)
    rw.assert_close(run_ort(pruned, feeds), run_ort(masked_reference(model, keep), feeds))
    assert any("'identity" in n and "(-1 vs 1)" in n for n in analysis.notes)
    assert any(f"'{y}'" in n and "(7 vs 6)" in n for n in analysis.notes)


@pytest.mark.parametrize("name", list(GRAPHS))
def test_executor_runs_pruned_graph_at_two_sizes(name):
    """The torch executor (gate training, recalibration) needs no input shape: it runs the
    original and the pruned graph at any size."""
    import numpy as np
    import torch
    from archs import _named, random_keep, run_ort

    from onnxprune.gates.executor import TorchGraph
    from onnxprune.surgery import prune_model

    model, input_shapes, run_shapes = GRAPHS[name]()
    model = _named(model)
    analysis = analyze_channels(model, input_shapes=input_shapes)
    pruned = prune_model(model, random_keep(analysis, np.random.default_rng(2)),
                         input_shapes=input_shapes)
    graph = TorchGraph(pruned).float()
    for number, shapes in enumerate(run_shapes):
        feeds = rw._feeds(model, shapes, number)
        got = graph(*[torch.from_numpy(v) for v in feeds.values()]).detach().numpy()
        rw.assert_close([got], run_ort(pruned, feeds)[:1], 1e-4)
