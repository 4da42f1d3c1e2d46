"""Real architectures exported by both torch exporters, and the reference models in models/."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from archs import ARCHS, check_prune, check_random_plans, export, random_keep

from onnxprune.analysis.groups import analyze_channels
from onnxprune.graph import load_model

EXPORTERS = ["torchscript", "dynamo"]
REFUSED: set = set()  # (architecture, exporter) pairs the analysis refuses; none today
CASES = [(n, e) for n in ARCHS for e in EXPORTERS if (n, e) not in REFUSED]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("archs")
    cache = {}

    def get(name, exporter):
        if (name, exporter) not in cache:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cache[name, exporter] = export(name, folder, exporter == "dynamo")
        return cache[name, exporter]

    return get


@pytest.mark.parametrize("name,exporter", CASES, ids=[f"{n}-{e}" for n, e in CASES])
def test_architecture_random_plans(exported, name, exporter):
    path = exported(name, exporter)
    loaded = load_model(path)
    assert loaded.used_external_data == (exporter == "dynamo")
    a = check_random_plans(loaded.model, plans=3, seed=len(name))
    prunable = [g for g in a.groups if g.prunable]
    assert prunable, f"{name}: nothing prunable; barriers: {a.barriers}"
    if name == "mobilenet_v3":  # SE expand convs join the main map of their block
        assert any(len(g.sources) >= 2 for g in prunable)
    if name == "resnet_bottleneck":  # the downsample joins the residual of both blocks
        assert any(len(g.sources) >= 2 for g in prunable)
    if name == "vit_mlp":  # the residual stream feeds LayerNorm: only hidden layers prune
        assert not a.groups[0].prunable and "LayerNormalization" in a.groups[0].reason
        assert [g.channels for g in prunable] == [16, 12]


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_shufflenet_couples_the_split_with_the_shuffle(exported, exporter):
    a = analyze_channels(load_model(exported("shufflenet_v2", exporter)).model)
    assert max(len(g.sources) for g in a.groups) >= 3  # the pass-through half of every unit
    assert not a.barriers


def test_shufflenet_torchscript_slice_bounds_are_folded_from_shapes(exported):
    """TorchScript exports chunk() as Slices whose bounds come from Shape -> Div arithmetic."""
    from onnxprune.analysis.shapes import fold_shape_values, infer_shapes

    model = load_model(exported("shufflenet_v2", "torchscript")).model
    folded = fold_shape_values(model, infer_shapes(model))
    slice_inputs = {n.input[2] for n in model.graph.node if n.op_type == "Slice"}
    assert slice_inputs & set(folded)


REFERENCE = ["vgg", "resnet", "mobilenetv2"]


@pytest.mark.parametrize("suffix", ["", "_dynamo"])
@pytest.mark.parametrize("name", REFERENCE)
def test_reference_model_random_plans(models_dir, name, suffix):
    path = models_dir / f"{name}{suffix}.onnx"
    if not path.is_file():
        pytest.skip(f"{path.name} absent (python tools/build_models.py)")
    model = load_model(path).model
    a = analyze_channels(model)
    assert any(g.prunable for g in a.groups)
    rng = np.random.default_rng(0)
    for fraction in (None, 0.5):
        check_prune(model, random_keep(a, rng, fraction=fraction), a, batches=(1, 2))
