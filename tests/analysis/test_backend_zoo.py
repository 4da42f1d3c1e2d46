"""Real third-party graphs that ship with a declared dependency: the onnx wheel's backend-test
"light" models (AlexNet, DenseNet-121, Inception v1/v2, ResNet-50, ShuffleNet, SqueezeNet,
VGG-19, ZFNet-512; IR 3, opset 9, weights computed by ConstantOfShape). Each analyses, a random
plan is pruned equal to its masked reference in ONNX Runtime, and the checker passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from archs import _named, assert_close, io_signature, random_feeds, random_keep, run_ort

from onnxprune.analysis.groups import analyze_channels, keep_mask
from onnxprune.analysis.summary import count_macs
from onnxprune.surgery import masked_reference, prune_model

FOLDER = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
MODELS = sorted(p.name for p in FOLDER.glob("light_*.onnx")) if FOLDER.is_dir() else []
# where channels are summed over by LRN (a true barrier), not all MACs can be prunable
LRN_FREE = {"light_densenet121.onnx", "light_inception_v2.onnx", "light_resnet50.onnx",
            "light_shufflenet.onnx", "light_squeezenet.onnx", "light_vgg19.onnx"}


@pytest.mark.skipif(not MODELS, reason="the onnx wheel ships no backend 'light' models")
@pytest.mark.parametrize("name", MODELS)
def test_backend_zoo_model(name):
    model = _named(onnx.load(str(FOLDER / name)))
    analysis = analyze_channels(model)
    assert analysis.folded, "the ConstantOfShape weights become initializers"
    share = analysis.prunable_macs() / analysis.macs()
    lrn = [b for b in analysis.barriers if b["op"] == "LRN"]
    assert share >= (0.999 if name in LRN_FREE else 0.5), (share, analysis.barriers)
    assert bool(lrn) == (name not in LRN_FREE)
    assert all(b["op"] in ("LRN", "Softmax") for b in analysis.barriers), analysis.barriers
    keep = random_keep(analysis, np.random.default_rng(0))
    assert keep, "the random plan prunes something"
    formula = analysis.macs(keep_mask(analysis, keep))
    reference = masked_reference(model, keep)
    pruned = prune_model(model, keep, analysis=analysis)  # (surgery consumes the analysis)
    onnx.checker.check_model(pruned, full_check=True)
    assert io_signature(pruned) == io_signature(model)
    assert count_macs(pruned) == formula
    feeds = random_feeds(model, 0)
    assert_close(run_ort(pruned, feeds), run_ort(reference, feeds))


@pytest.mark.skipif("light_shufflenet.onnx" not in MODELS, reason="no backend ShuffleNet")
def test_shufflenet_grouped_convs_keep_their_group_count():
    model = onnx.load(str(FOLDER / "light_shufflenet.onnx"))
    analysis = analyze_channels(model)
    keep = random_keep(analysis, np.random.default_rng(1))
    pruned = prune_model(model, keep)

    def groups(m):
        return [next((a.i for a in n.attribute if a.name == "group"), 1)
                for n in m.graph.node if n.op_type == "Conv"]

    before, after = groups(model), groups(pruned)
    grouped = [i for i, (g, c) in enumerate(zip(before, after)) if g in (3, 4, 8) and g == c]
    assert len(grouped) >= 8  # the grouped 1x1 convs prune inside each group, groups stay
