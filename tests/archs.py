"""Test helpers: tiny ONNX graph building, the prune-vs-masked-reference check, and small torch
architectures (ResNet bottleneck, DenseNet, MobileNetV2/V3, ShuffleNetV2, ViT MLP) exported with
both torch exporters.

``check_prune`` is the proof every test shares: the pruned model passes the full checker, keeps
its input/output names and shapes, runs in ONNX Runtime with outputs equal to the masked
reference, and its counted MACs equal the analysis formula for the same keep mask.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.analysis.groups import analyze_channels, keep_mask
from onnxprune.analysis.summary import count_macs
from onnxprune.graph import ensure_node_names
from onnxprune.surgery import masked_reference, prune_model

OPSET = 17
TOL = 1e-4


# --- building tiny graphs with onnx.helper ----------------------------------------------------


class Builder:
    """Accumulates nodes and float initializers; ``model()`` returns a checked ModelProto."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def input(self, name: str, shape, dtype=TensorProto.FLOAT) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, dtype, list(shape)))
        return name

    def init(self, array, prefix: str = "w") -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, *shape, scale: float | None = None) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        scale = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
        return self.init((self.rng.standard_normal(shape) * scale).astype(np.float32))

    def op(self, op_type: str, inputs, outputs: int = 1, domain: str | None = None,
           **attrs) -> str | list[str]:
        name = self.name(op_type.lower() + "_")
        outs = [f"{name}_out{i}" if outputs > 1 else f"{name}_out" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name,
                                           domain=domain, **attrs))
        return outs if outputs > 1 else outs[0]

    # common layers
    def conv(self, x: str, cin: int, cout: int, k: int = 3, group: int = 1, bias: bool = True,
             stride: int = 1) -> str:
        inputs = [x, self.weight(cout, cin // group, k, k)]
        if bias:
            inputs.append(self.init((self.rng.standard_normal(cout) * 0.1).astype(np.float32), "b"))
        return self.op("Conv", inputs, kernel_shape=[k, k], pads=[k // 2] * 4, group=group,
                       strides=[stride, stride])

    def bn(self, x: str, c: int) -> str:
        r = self.rng
        params = [r.uniform(0.5, 1.5, c), r.standard_normal(c) * 0.1,
                  r.standard_normal(c) * 0.1, r.uniform(0.5, 1.5, c)]
        return self.op("BatchNormalization",
                       [x, *(self.init(p.astype(np.float32), "bn") for p in params)])

    def gemm(self, x: str, cin: int, cout: int, trans_b: int = 1) -> str:
        w = self.weight(cout, cin) if trans_b else self.weight(cin, cout, scale=1 / np.sqrt(cin))
        b = self.init((self.rng.standard_normal(cout) * 0.1).astype(np.float32), "b")
        return self.op("Gemm", [x, w, b], transB=trans_b)

    def const_i64(self, values) -> str:
        return self.init(np.asarray(values, dtype=np.int64), "c")

    def model(self, outputs, opset: int = OPSET, extra_domains=()) -> onnx.ModelProto:
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
        graph = helper.make_graph(self.nodes, "g", self.inputs, outs, self.inits)
        imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1)
                                                      for d in extra_domains]
        model = helper.make_model(graph, opset_imports=imports)
        model.ir_version = 8
        if not extra_domains:
            model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
            onnx.checker.check_model(model, full_check=True)
        # fill the output shapes so the "shapes unchanged" check compares real dims
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
        by_name = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output)}
        for out in model.graph.output:
            if out.name in by_name and by_name[out.name].type.tensor_type.HasField("shape"):
                out.type.CopyFrom(by_name[out.name].type)
        del model.graph.value_info[:]
        return model


# --- plans -----------------------------------------------------------------------------------


def random_keep(analysis, rng: np.random.Generator, fraction: float | None = None,
                skip: float = 0.2, tries: int = 50) -> dict[str, list[int]]:
    """A random valid plan (``validate_keep`` accepts it): tries until no slice is emptied."""
    from onnxprune.errors import OnnxPruneError
    from onnxprune.surgery import validate_keep

    for _ in range(tries):
        keep = _random_keep(analysis, rng, fraction, skip)
        try:
            validate_keep(analysis, keep)
            return keep
        except OnnxPruneError as exc:
            assert "keeps none of the channels" in str(exc), exc
    return {}


def _random_keep(analysis, rng: np.random.Generator, fraction: float | None,
                 skip: float) -> dict[str, list[int]]:
    """Each prunable group keeps a non-empty random subset (or is absent)."""
    keep = {}
    for g in analysis.groups:
        if not g.prunable or rng.random() < skip:
            continue
        if fraction is None:
            count = int(rng.integers(1, g.channels + 1))
        else:
            count = max(1, int(round(g.channels * fraction)))
        keep[g.id] = sorted(rng.choice(g.channels, size=count, replace=False).tolist())
    return keep


# --- running and proving ----------------------------------------------------------------------


def _np_dtype(elem_type: int):
    return helper.tensor_dtype_to_np_dtype(elem_type)


def io_signature(model: onnx.ModelProto):
    inits = {t.name for t in model.graph.initializer}

    def sig(values):
        rows = []
        for v in values:
            if v.name in inits:
                continue
            t = v.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param
                         for d in t.shape.dim) if t.HasField("shape") else None
            rows.append((v.name, t.elem_type, dims))
        return rows

    return sig(model.graph.input), sig(model.graph.output)


def random_feeds(model: onnx.ModelProto, seed: int = 0, batch: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, elem, dims in io_signature(model)[0]:
        shape = [d if isinstance(d, int) and d > 0 else batch for d in dims]
        feeds[name] = rng.standard_normal(shape).astype(_np_dtype(elem))
    return feeds


def run_ort(model: onnx.ModelProto | str, feeds) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model if isinstance(model, (str, os.PathLike)) else model.SerializeToString()
    session = ort.InferenceSession(str(source) if isinstance(source, Path) else source, options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def assert_close(got, want, tol: float = TOL, what: str = "output") -> None:
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape, f"{what} {i}: shape {a.shape} != {b.shape}"
        scale = max(float(np.abs(b).max()) if b.size else 0.0, 1.0)
        diff = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0
        assert diff <= tol * scale, f"{what} {i}: max abs diff {diff:.3g} > {tol} * {scale:.3g}"


def check_prune(model: onnx.ModelProto, keep: dict, analysis=None, seed: int = 0,
                batches=(1,), tol: float = TOL):
    """The full proof for one plan; returns (pruned, reference)."""
    model = _named(model)
    analysis = analysis if analysis is not None else analyze_channels(model)
    formula = analysis.macs(keep_mask(analysis, keep))
    pruned = prune_model(model, keep)
    reference = masked_reference(model, keep)
    onnx.checker.check_model(pruned, full_check=True)
    assert io_signature(pruned) == io_signature(model)
    assert count_macs(pruned) == formula
    for batch in batches:
        feeds = random_feeds(model, seed, batch)
        want = run_ort(reference, feeds)
        got = run_ort(pruned, feeds)
        assert_close(got, want)
    return pruned, reference


def check_random_plans(model: onnx.ModelProto, plans: int = 3, seed: int = 0, batches=(1,)):
    """``check_prune`` with ``plans`` random plans (plus keep-all); returns the analysis."""
    model = _named(model)
    analysis = analyze_channels(model)
    rng = np.random.default_rng(seed)
    check_prune(model, {}, analysis, seed, batches)
    for _ in range(plans):
        check_prune(model, random_keep(analysis, rng), analysis, seed, batches)
    return analysis


def _named(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    ensure_node_names(copy)
    return copy


def group_of(analysis, source: str):
    """The group whose sources include ``source`` (a tensor name)."""
    for g in analysis.groups:
        if source in g.sources:
            return g
    raise KeyError(source)


def pruned_channels(analysis, keep, group_id: str) -> int:
    g = analysis.group(group_id)
    return len(keep.get(group_id, range(g.channels)))


# --- torch architectures ----------------------------------------------------------------------


def _torch():
    import torch
    from torch import nn

    return torch, nn


def resnet_bottleneck():
    torch, nn = _torch()

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(cout)
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout)) if stride != 1 or cin != cout else None

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = torch.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return torch.relu(y + (self.down(x) if self.down is not None else x))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.BatchNorm2d(8), nn.ReLU())
            self.b1 = Bottleneck(8, 4, 16, 2)
            self.b2 = Bottleneck(16, 4, 16, 1)
            self.fc = nn.Linear(16, 5)

        def forward(self, x):
            y = self.b2(self.b1(self.stem(x)))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))

    return Net(), (1, 3, 8, 8)


def densenet_block():
    torch, nn = _torch()

    class Layer(nn.Module):
        def __init__(self, cin, growth):
            super().__init__()
            self.bn1 = nn.BatchNorm2d(cin)
            self.conv1 = nn.Conv2d(cin, 2 * growth, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(2 * growth)
            self.conv2 = nn.Conv2d(2 * growth, growth, 3, 1, 1, bias=False)

        def forward(self, x):
            y = self.conv1(torch.relu(self.bn1(x)))
            return torch.cat([x, self.conv2(torch.relu(self.bn2(y)))], 1)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 6, 3, 1, 1, bias=False)
            self.block = nn.Sequential(Layer(6, 4), Layer(10, 4), Layer(14, 4))
            self.trans = nn.Sequential(nn.BatchNorm2d(18), nn.ReLU(), nn.Conv2d(18, 8, 1),
                                       nn.AvgPool2d(2))
            self.fc = nn.Linear(8 * 4 * 4, 5)

        def forward(self, x):
            return self.fc(torch.flatten(self.trans(self.block(self.stem(x))), 1))

    return Net(), (1, 3, 8, 8)


def _mobilenet_parts():
    torch, nn = _torch()

    class SE(nn.Module):
        def __init__(self, c, squeeze, gate):
            super().__init__()
            self.fc1 = nn.Conv2d(c, squeeze, 1)
            self.fc2 = nn.Conv2d(squeeze, c, 1)
            self.gate = gate

        def forward(self, x):
            s = nn.functional.adaptive_avg_pool2d(x, 1)
            return x * self.gate(self.fc2(torch.relu(self.fc1(s))))

    class Inverted(nn.Module):
        def __init__(self, cin, expand, cout, stride, act, se=None):
            super().__init__()
            layers = [nn.Conv2d(cin, expand, 1, bias=False), nn.BatchNorm2d(expand), act(),
                      nn.Conv2d(expand, expand, 3, stride, 1, groups=expand, bias=False),
                      nn.BatchNorm2d(expand), act()]
            if se is not None:
                layers.append(se(expand))
            layers += [nn.Conv2d(expand, cout, 1, bias=False), nn.BatchNorm2d(cout)]
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = self.body(x)
            return x + y if self.residual else y

    return torch, nn, SE, Inverted


def mobilenet_v2():
    torch, nn, _, Inverted = _mobilenet_parts()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8),
                                      nn.ReLU6())
            self.blocks = nn.Sequential(Inverted(8, 16, 8, 1, nn.ReLU6),
                                        Inverted(8, 24, 12, 2, nn.ReLU6),
                                        Inverted(12, 24, 12, 1, nn.ReLU6))
            self.head = nn.Sequential(nn.Conv2d(12, 32, 1), nn.ReLU6())
            self.fc = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, 5))

        def forward(self, x):
            y = self.head(self.blocks(self.stem(x)))
            return self.fc(y.mean((2, 3)))

    return Net(), (1, 3, 16, 16)


def mobilenet_v3():
    torch, nn, SE, Inverted = _mobilenet_parts()

    def se(c):
        return SE(c, max(c // 4, 2), nn.Hardsigmoid())

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8),
                                      nn.Hardswish())
            self.blocks = nn.Sequential(Inverted(8, 16, 8, 1, nn.ReLU, se),
                                        Inverted(8, 24, 12, 2, nn.Hardswish, se),
                                        Inverted(12, 32, 12, 1, nn.Hardswish, se))
            self.head = nn.Sequential(nn.Conv2d(12, 24, 1), nn.Hardswish(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Linear(24, 16), nn.Hardswish(), nn.Linear(16, 5))

        def forward(self, x):
            return self.head(self.blocks(self.stem(x)))

    return Net(), (1, 3, 16, 16)


def shufflenet_v2():
    torch, nn = _torch()

    def shuffle(x, groups):
        n, c, h, w = x.shape
        x = x.reshape(n, groups, c // groups, h, w).transpose(1, 2)
        return x.reshape(n, c, h, w)

    def branch(cin, cout, stride):
        return nn.Sequential(
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, stride, 1, groups=cout, bias=False), nn.BatchNorm2d(cout),
            nn.Conv2d(cout, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    class Unit(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.branch = branch(c // 2, c // 2, 1)

        def forward(self, x):
            a, b = x.chunk(2, dim=1)
            return shuffle(torch.cat([a, self.branch(b)], 1), 2)

    class Down(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.left = nn.Sequential(
                nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                nn.Conv2d(cin, cout // 2, 1, bias=False), nn.BatchNorm2d(cout // 2), nn.ReLU())
            self.right = branch(cin, cout // 2, 2)

        def forward(self, x):
            return shuffle(torch.cat([self.left(x), self.right(x)], 1), 2)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8),
                                      nn.ReLU())
            self.stage = nn.Sequential(Down(8, 16), Unit(16), Unit(16))
            self.conv5 = nn.Sequential(nn.Conv2d(16, 24, 1), nn.ReLU())
            self.fc = nn.Linear(24, 5)

        def forward(self, x):
            return self.fc(self.conv5(self.stage(self.stem(x))).mean((2, 3)))

    return Net(), (1, 3, 8, 8)


def vit_mlp():
    torch, nn = _torch()

    class Block(nn.Module):
        def __init__(self, dim, hidden):
            super().__init__()
            self.norm = nn.LayerNorm(dim)
            self.fc1 = nn.Linear(dim, hidden)
            self.act = nn.GELU()
            self.fc2 = nn.Linear(hidden, dim)

        def forward(self, x):
            return x + self.fc2(self.act(self.fc1(self.norm(x))))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(6, 8)
            self.blocks = nn.Sequential(Block(8, 16), Block(8, 12))
            self.norm = nn.LayerNorm(8)
            self.head = nn.Linear(8, 5)

        def forward(self, x):
            y = self.norm(self.blocks(self.embed(x)))
            return self.head(y.mean(1))

    return Net(), (1, 4, 6)


ARCHS = {
    "resnet_bottleneck": resnet_bottleneck,
    "densenet": densenet_block,
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3": mobilenet_v3,
    "shufflenet_v2": shufflenet_v2,
    "vit_mlp": vit_mlp,
}


def vgg_small():
    """Plain conv stack with weights over 1 KB (so that external data stays external)."""
    torch, nn = _torch()
    module = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU(),
                           nn.Conv2d(16, 24, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
                           nn.Flatten(), nn.Linear(24 * 4 * 4, 5))
    return module, (1, 3, 8, 8)


EXTRA = {"vgg_small": vgg_small}


def randomize_bn(module, seed: int = 0) -> None:
    """Give BatchNorm/LayerNorm non-trivial statistics so that pruning mistakes show."""
    torch, nn = _torch()
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                    m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def export(name: str, folder: str | os.PathLike, dynamo: bool) -> Path:
    """Export architecture ``name`` (eval mode, fixed seed) to ``folder``; returns the path.

    TorchScript: ``dynamo=False, opset_version=17``; torch.export: ``dynamo=True`` with the weights
    as external data.
    """
    import torch

    torch.manual_seed(0)
    module, shape = {**ARCHS, **EXTRA}[name]()
    randomize_bn(module)
    module.eval()
    x = torch.randn(*shape)
    path = Path(folder) / f"{name}{'_dynamo' if dynamo else ''}.onnx"
    if dynamo:
        program = torch.onnx.export(module, (x,), dynamo=True, input_names=["input"],
                                    output_names=["logits"], opset_version=18)
        program.save(str(path), external_data=True)
    else:
        torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"])
    return path


def export_tmp(name: str, dynamo: bool) -> Path:
    folder = tempfile.mkdtemp(prefix=f"onnxprune-{name}-")
    return export(name, folder, dynamo)


# --- small graph patterns for the op tests ----------------------------------------------------


def stem(b: Builder, c: int = 6, cin: int = 3, hw: int = 4, relu: bool = True) -> str:
    """Input 'x' (1, cin, hw, hw) -> Conv -> (Relu): a prunable source of ``c`` channels."""
    x = b.input("x", [1, cin, hw, hw])
    y = b.conv(x, cin, c)
    return b.op("Relu", [y]) if relu else y


def head(b: Builder, y: str, c: int, out: int = 3) -> str:
    """Conv 1x1 reading ``c`` channels (so that they are summed over) -> graph output."""
    return b.conv(y, c, out, k=1)


def conv_classifier(seed: int, hw: int, widths: tuple[int, ...], classes: int) -> onnx.ModelProto:
    """Input 'x' (N, 3, hw, hw) -> (Conv -> Relu) per width -> GlobalAveragePool -> Flatten ->
    Gemm to ``classes``: the small classifier the refit and loader tests score."""
    b = Builder(seed=seed)
    y, cin = b.input("x", ["N", 3, hw, hw]), 3
    for width in widths:
        y, cin = b.op("Relu", [b.conv(y, cin, width)]), width
    y = b.op("Flatten", [b.op("GlobalAveragePool", [y])])
    return b.model([b.gemm(y, cin, classes)])
