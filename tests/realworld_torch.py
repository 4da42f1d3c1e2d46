"""Representative real-world graphs (issue 12) written as torch modules and exported by both
PyTorch exporters with dynamic spatial axes.

``export(name, dynamo)`` returns ``(model, input_shapes, run_shapes)`` like the builders of
``realworld_archs.py``; exports are cached for the session (they take seconds each).

- ``yolov8``: C2f blocks (Conv-BN-SiLU, chunk/Split, Concat), SPPF max-pools, a PAN neck with
  nearest upsampling, a decoupled head with the DFL reshape/softmax/conv and the final Concat.
- ``ppocr``: a conv backbone down to height 1, Reshape/Transpose into a sequence, Linear (MatMul)
  layers, Softmax; dynamic batch and width.
- ``nhwc``: an NHWC TF-style classifier: permute to NCHW and back, explicit "SAME" Pad in the model
  (before a stride-2 conv, and on an NHWC tensor), a residual Add in NHWC, mean over H, W, Linear.
- ``opset9``: TorchScript at opset 9 without constant folding: weights computed in the graph
  (a fp16 copy cast back to float, a weight-standardising scale), residual Adds. The torch
  exporters write no ``Sum``; the onnx.helper ``opset9_computed_weights`` keeps that case.
"""

from __future__ import annotations

import contextlib
import functools
import io
import tempfile
import warnings
from pathlib import Path

import onnx

EXPORTERS = ("torchscript", "dynamo")
NAMES = ("yolov8", "ppocr", "nhwc", "opset9")


def _nn():
    import torch
    from torch import nn

    return torch, nn


def _modules():
    torch, nn = _nn()
    F = torch.nn.functional

    class ConvBnAct(nn.Module):
        def __init__(self, cin, cout, k=3, s=1, act=nn.SiLU):
            super().__init__()
            k = (k, k) if isinstance(k, int) else k
            s = (s, s) if isinstance(s, int) else s
            self.conv = nn.Conv2d(cin, cout, k, s, (k[0] // 2, k[1] // 2), bias=False)
            self.bn = nn.BatchNorm2d(cout)
            self.act = act()

        def forward(self, x):
            return self.act(self.bn(self.conv(x)))

    class Bottleneck(nn.Module):
        def __init__(self, c, shortcut):
            super().__init__()
            self.cv1, self.cv2, self.add = ConvBnAct(c, c), ConvBnAct(c, c), shortcut

        def forward(self, x):
            y = self.cv2(self.cv1(x))
            return x + y if self.add else y

    class C2f(nn.Module):
        def __init__(self, cin, cout, n=1, shortcut=True):
            super().__init__()
            self.c = cout // 2
            self.cv1 = ConvBnAct(cin, 2 * self.c, 1)
            self.cv2 = ConvBnAct((2 + n) * self.c, cout, 1)
            self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

        def forward(self, x):
            y = list(self.cv1(x).chunk(2, 1))
            y.extend(m(y[-1]) for m in self.m)
            return self.cv2(torch.cat(y, 1))

    class SPPF(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.cv1, self.cv2 = ConvBnAct(c, c // 2, 1), ConvBnAct(2 * c, c, 1)
            self.m = nn.MaxPool2d(5, 1, 2)

        def forward(self, x):
            y = [self.cv1(x)]
            y.extend(self.m(y[-1]) for _ in range(3))
            return self.cv2(torch.cat(y, 1))

    class DFL(nn.Module):
        def __init__(self, reg_max):
            super().__init__()
            self.conv = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
            self.conv.weight.data[:] = torch.arange(reg_max, dtype=torch.float).view(
                1, reg_max, 1, 1)
            self.reg_max = reg_max

        def forward(self, x):
            b, _, a = x.shape
            return self.conv(x.view(b, 4, self.reg_max, a).transpose(2, 1).softmax(1)).view(
                b, 4, a)

    class YOLOv8(nn.Module):
        def __init__(self, c=(8, 16, 24, 32), reg_max=4, classes=3):
            super().__init__()
            self.stem = ConvBnAct(3, c[0], 3, 2)
            self.b1 = nn.Sequential(ConvBnAct(c[0], c[1], 3, 2), C2f(c[1], c[1]))
            self.b2 = nn.Sequential(ConvBnAct(c[1], c[2], 3, 2), C2f(c[2], c[2]))
            self.b3 = nn.Sequential(ConvBnAct(c[2], c[3], 3, 2), C2f(c[3], c[3]))
            self.b4 = nn.Sequential(ConvBnAct(c[3], c[3], 3, 2), C2f(c[3], c[3]), SPPF(c[3]))
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.n4 = C2f(2 * c[3], c[3], shortcut=False)
            self.n3 = C2f(c[3] + c[2], c[2], shortcut=False)
            self.down = ConvBnAct(c[2], c[2], 3, 2)
            self.d4 = C2f(c[2] + c[3], c[3], shortcut=False)
            self.no, self.reg_max = 4 * reg_max + classes, reg_max
            self.box = nn.ModuleList(nn.Sequential(ConvBnAct(ch, 16), ConvBnAct(16, 16),
                                                   nn.Conv2d(16, 4 * reg_max, 1))
                                     for ch in (c[2], c[3]))
            self.cls = nn.ModuleList(nn.Sequential(ConvBnAct(ch, 16), ConvBnAct(16, 16),
                                                   nn.Conv2d(16, classes, 1))
                                     for ch in (c[2], c[3]))
            self.dfl = DFL(reg_max)

        def forward(self, x):
            p3 = self.b2(self.b1(self.stem(x)))
            p4 = self.b3(p3)
            p5 = self.b4(p4)
            n4 = self.n4(torch.cat([self.up(p5), p4], 1))
            n3 = self.n3(torch.cat([self.up(n4), p3], 1))
            d4 = self.d4(torch.cat([self.down(n3), n4], 1))
            feats = [torch.cat([self.box[i](f), self.cls[i](f)], 1) for i, f in enumerate((n3, d4))]
            b = x.shape[0]
            anchors = torch.cat([f.view(b, self.no, -1) for f in feats], 2)
            box, cls = anchors.split((4 * self.reg_max, self.no - 4 * self.reg_max), 1)
            return torch.cat([self.dfl(box), cls.sigmoid()], 1)

    class PPOCR(nn.Module):
        def __init__(self, classes=11):
            super().__init__()
            hs = nn.Hardswish
            self.backbone = nn.Sequential(
                ConvBnAct(3, 8, 3, 2, hs), ConvBnAct(8, 8, 3, 1, hs),
                ConvBnAct(8, 16, 3, (2, 1), hs), ConvBnAct(16, 16, 1, 1, hs),
                ConvBnAct(16, 24, 3, (2, 1), hs), ConvBnAct(24, 32, 3, (2, 1), hs),
                nn.MaxPool2d((2, 1), (2, 1)), ConvBnAct(32, 32, (1, 3), 1, hs))
            self.fc1, self.fc2 = nn.Linear(32, 24), nn.Linear(24, 24)
            self.head = nn.Linear(24, classes)

        def forward(self, x):
            y = self.backbone(x)
            b, c, _, w = y.shape
            seq = y.reshape(b, c, w).permute(0, 2, 1)
            seq = F.hardswish(self.fc2(F.hardswish(self.fc1(seq))))
            return self.head(seq).softmax(2)

    class NHWC(nn.Module):
        def __init__(self, classes=5):
            super().__init__()
            self.c1 = nn.Conv2d(3, 8, 3, 2)
            self.c2 = nn.Conv2d(8, 16, 3, 1)
            self.c3, self.c4 = nn.Conv2d(16, 16, 3, 1, 1), nn.Conv2d(16, 16, 3, 1, 1)
            self.c5 = nn.Conv2d(16, 24, 3, 2)
            self.bn = nn.BatchNorm2d(24)
            self.fc = nn.Linear(24, classes)

        @staticmethod
        def conv(layer, x, nchw_pad=None):  # NHWC in, NHWC out, as tf2onnx writes a conv
            y = x.permute(0, 3, 1, 2)
            if nchw_pad is not None:
                y = F.pad(y, nchw_pad)
            return F.relu6(layer(y)).permute(0, 2, 3, 1)

        def forward(self, x):
            y = self.conv(self.c1, x, (0, 1, 0, 1))  # TF "SAME" before a stride-2 conv
            y = self.conv(self.c2, F.pad(y, (0, 0, 1, 1, 1, 1)))  # a Pad on the NHWC tensor
            y = y + self.conv(self.c4, self.conv(self.c3, y))
            y = self.bn(self.conv(self.c5, y, (0, 1, 0, 1)).permute(0, 3, 1, 2))
            return self.fc(y.permute(0, 2, 3, 1).mean((1, 2))).softmax(1)

    class Opset9(nn.Module):
        def __init__(self, classes=4):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 12, 3, 2, 1), nn.Conv2d(12, 12, 3, 1, 1)
            self.c3 = nn.Conv2d(12, 12, 1)
            self.bn = nn.BatchNorm2d(12)
            self.c4, self.c5 = nn.Conv2d(12, 16, 3, 2, 1), nn.Conv2d(16, 16, 3, 1, 1)
            self.gain = nn.Parameter(torch.rand(16, 1, 1, 1) + 0.5)
            self.fc = nn.Linear(16, classes)

        def forward(self, x):
            y = F.relu(self.c1(x))
            w2 = self.c2.weight.half().float()  # fp16 weights cast back (computed)
            a = F.relu(F.conv2d(y, w2, self.c2.bias, padding=1))
            c = F.relu(self.c3(a))
            y = self.bn(y + a + c)
            z = F.relu(self.c4(y))
            w5 = self.c5.weight * self.gain  # a computed (scaled) weight
            z = z + F.relu(F.conv2d(z, w5, self.c5.bias, padding=1))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(z, 1), 1))

    return {"yolov8": YOLOv8, "ppocr": PPOCR, "nhwc": NHWC, "opset9": Opset9}


# name -> (input name, example shape, dynamic axes {axis: (dim name, multiple)}, two run shapes)
SPECS = {
    "yolov8": ("images", (1, 3, 64, 64), {2: ("height", 32), 3: ("width", 32)},
               [(1, 3, 64, 64), (1, 3, 96, 128)]),
    "ppocr": ("x", (1, 3, 32, 64), {0: ("batch", 1), 3: ("width", 1)},
              [(1, 3, 32, 64), (2, 3, 32, 100)]),
    "nhwc": ("input_1", (1, 32, 32, 3), {0: ("N", 1), 1: ("H", 1), 2: ("W", 1)},
             [(1, 32, 32, 3), (2, 40, 24, 3)]),
    "opset9": ("data", (1, 3, 16, 16), {0: ("N", 1), 2: ("H", 1), 3: ("W", 1)},
               [(1, 3, 16, 16), (2, 3, 20, 12)]),
}


def available(name: str, dynamo: bool) -> bool:
    """torch.export writes opset 18 and later only: no opset-9 export with ``dynamo=True``."""
    return not (dynamo and name == "opset9")


def _randomize(module, seed: int = 0) -> None:
    torch, nn = _nn()
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def _export_file(name: str, dynamo: bool, path: Path) -> None:
    torch, _ = _nn()
    torch.manual_seed(0)
    module = _modules()[name]()
    _randomize(module)
    module.eval()
    input_name, shape, axes, _ = SPECS[name]
    if dynamo and 0 in axes:  # torch.export specialises an example size of 1
        shape = (2, *shape[1:])
    x = torch.randn(*shape)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if dynamo:
            from torch.export import Dim

            dims = {}
            for axis, (dim, multiple) in axes.items():
                base = Dim(f"{dim}_{multiple}" if multiple > 1 else dim)
                dims[axis] = multiple * base if multiple > 1 else base
            program = torch.onnx.export(module, (x,), dynamo=True, input_names=[input_name],
                                        output_names=["output"], opset_version=18,
                                        dynamic_shapes=(dims,), verbose=False)
            program.save(str(path))
        else:
            opset = 9 if name == "opset9" else 17
            torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=opset,
                              input_names=[input_name], output_names=["output"],
                              dynamic_axes={input_name: {a: d for a, (d, _) in axes.items()}},
                              do_constant_folding=name != "opset9")


@functools.lru_cache(maxsize=None)
def _exported(name: str, dynamo: bool) -> bytes:
    with tempfile.TemporaryDirectory(prefix=f"onnxprune-{name}-") as folder:
        path = Path(folder) / f"{name}.onnx"
        _export_file(name, dynamo, path)
        return onnx.load(str(path)).SerializeToString()


def export(name: str, dynamo: bool):
    """``(model, input_shapes, run_shapes)`` of representative graph ``name`` (a fresh copy)."""
    model = onnx.ModelProto()
    model.ParseFromString(_exported(name, dynamo))
    input_name, shape, _, runs = SPECS[name]
    real = model.graph.input[0].name
    assert real == input_name, (real, input_name)
    return model, {input_name: shape}, [{input_name: s} for s in runs]


def cases():
    """(name, dynamo) for every exportable combination, with readable ids."""
    return [(n, e == "dynamo") for n in NAMES for e in EXPORTERS if available(n, e == "dynamo")]


def case_id(case) -> str:
    name, dynamo = case
    return f"{name}-{'dynamo' if dynamo else 'torchscript'}"
