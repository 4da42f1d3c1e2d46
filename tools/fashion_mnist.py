"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (numpy only, no download).

The IDX files (``train-images-idx3-ubyte[.gz]`` etc.) are read from ``$FASHION_MNIST_DIR`` or
``/usr/share/datasets/fashion-mnist/``. The fixed split of the yardstick (issue 14):

* ``train``: 55,000 of the 60,000 training images (everything not in ``val``);
* ``val``: 5,000 training images, 500 per class, drawn per class with
  ``numpy.random.default_rng(SPLIT_SEED)``; kept out of training, the only data used to choose
  any setting;
* ``test``: the official 10,000 test images, touched only by the final benchmark.

Every split is sorted by its row in the original file. Preprocessing:
``x = (pixels/255 - MEAN)/STD``, float32 NCHW ``[N, 1, 28, 28]``; ``y`` int64.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = ("Fashion-MNIST not found: install it with `apt-get install -y dataset-fashion-mnist` "
                "(IDX files in /usr/share/datasets/fashion-mnist/) or set FASHION_MNIST_DIR")
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
SPLIT_SEED = 0
VAL_PER_CLASS = 500
NUM_CLASSES = 10
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel mean / std (of pixels/255)
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot")


class FashionMNISTMissing(FileNotFoundError):
    pass


def data_dir() -> Path:
    return Path(os.environ.get("FASHION_MNIST_DIR") or DEFAULT_DIR)


def _find(stem: str, folder: Path) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    raise FashionMNISTMissing(f"{INSTALL_HINT} (missing {folder / stem}[.gz])")


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (gzip or plain) as a numpy array of its declared shape (uint8 data)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file")
    if raw[2] != 0x08:
        raise ValueError(f"{path}: IDX type 0x{raw[2]:02x}, expected unsigned byte (0x08)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {data.size} bytes of data for shape {dims}")
    return data.reshape(dims)


def load_raw(kind: str, folder: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(pixels uint8 [N, 28, 28], labels int64 [N])`` of ``kind`` 'train' or 'test'."""
    folder = Path(folder) if folder else data_dir()
    images, labels = (read_idx(_find(stem, folder)) for stem in FILES[kind])
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise ValueError(f"unexpected Fashion-MNIST shapes {images.shape} / {labels.shape}")
    return images, labels.astype(np.int64)


def preprocess(pixels: np.ndarray) -> np.ndarray:
    x = (pixels.astype(np.float32) / 255.0 - MEAN) / STD
    return x.reshape(-1, 1, 28, 28).astype(np.float32)


def split_indices(labels: np.ndarray, seed: int = SPLIT_SEED,
                  val_per_class: int = VAL_PER_CLASS) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, val rows) of the 60,000 training images; val: per class a seeded draw."""
    rng = np.random.default_rng(seed)
    val = []
    for c in range(NUM_CLASSES):
        idx = np.flatnonzero(labels == c)
        val.append(rng.permutation(idx)[:val_per_class])
    val = np.sort(np.concatenate(val))
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val


def load_splits(folder: Path | None = None, seed: int = SPLIT_SEED) -> dict:
    """``{"train": (x, y), "val": (x, y), "test": (x, y)}``, preprocessed."""
    pixels, labels = load_raw("train", folder)
    train, val = split_indices(labels, seed)
    test_pixels, test_labels = load_raw("test", folder)
    return {"train": (preprocess(pixels[train]), labels[train]),
            "val": (preprocess(pixels[val]), labels[val]),
            "test": (preprocess(test_pixels), test_labels)}


def subset(x: np.ndarray, y: np.ndarray, per_class: int, seed: int = SPLIT_SEED):
    """A class-balanced seeded subset (``per_class`` images per class), sorted by row."""
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class]
                                   for c in range(NUM_CLASSES)]))
    return x[keep], y[keep]


def split_info() -> dict:
    return {
        "source": "Debian package dataset-fashion-mnist (" + str(DEFAULT_DIR) + "/*-ubyte.gz, "
                  "60,000 training + 10,000 test images)",
        "seed": SPLIT_SEED,
        "method": "val: per class numpy.random.default_rng(seed).permutation of that class's "
                  f"training rows, first {VAL_PER_CLASS}; train: every other training row; "
                  "test: the official t10k set; each split sorted by row",
        "train": 60000 - VAL_PER_CLASS * NUM_CLASSES, "val": VAL_PER_CLASS * NUM_CLASSES,
        "test": 10000,
        "preprocess": f"x = (pixels/255 - {MEAN})/{STD}, float32 NCHW [N,1,28,28]; y int64",
    }


if __name__ == "__main__":
    import sys

    try:
        splits = load_splits()
    except FashionMNISTMissing as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    for name, (x, y) in splits.items():
        print(name, x.shape, np.bincount(y).tolist())
