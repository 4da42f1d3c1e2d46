"""Data for ``compress`` and ``validate``: a ``.npz`` file or an image folder.

numpy and Pillow only. Two layouts are accepted:

- ``data.npz`` with a float array ``x`` already preprocessed in the model's input layout, and an
  optional integer array ``y`` of class labels. Pickled (object) arrays are never loaded.
- a folder of images in class sub-folders (``root/<class>/<image>``): labels come from the class
  names (a class list, integer folder names, or sorted names when the folders are exactly the
  model's classes; see ``onnxprune.preprocess.label_map``); each image is converted to the model's
  channel count (1 → "L", 3 → "RGB"), resized to (H, W) (or resized and center-cropped), scaled,
  normalized per channel and laid out as the model wants it (``onnxprune.preprocess``).

Nothing holds the whole dataset: ``Dataset.x`` is a ``LazyArray`` (``onnxprune.lazydata``) that
decodes samples when indexed. A ``.npz`` is memory-mapped, or streamed once keeping only the
selected rows when compressed (``onnxprune.npzdata``); an image folder's files and labels are
listed up front and each image decoded on access. Subsets (``--fraction``/``--limit``, the
held-out part, calibration samples) are index lists into the same source.

Every problem is a one-line ``OnnxPruneError`` with exit code 2, also a file that fails to decode
while the samples stream.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxprune.errors import OnnxPruneError
from onnxprune.lazydata import ImageSource, LazyArray, count_nonfinite, subset
from onnxprune.npzdata import npz_sample_shape  # noqa: F401  (public)
from onnxprune.preprocess import (Preprocessing, geometry, label_map, per_channel,
                                  read_class_names)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
SUBSET_SEED = 0

Dim = int | str | None  # a model input dim: a size, a symbolic name, or unknown


@dataclass(frozen=True)
class Dataset:
    """Inputs ``x`` (float32, model layout; a ``LazyArray`` decoded on access, or a plain
    array) and optional int64 labels ``y``."""

    x: LazyArray | np.ndarray
    y: np.ndarray | None = None
    classes: tuple[str, ...] | None = None  # image folders: class names in label order

    def __len__(self) -> int:
        return int(self.x.shape[0])


def load_dataset(
    path: str | os.PathLike,
    input_shape: Sequence[Dim] | None = None,
    prep: Preprocessing | None = None,
    fraction: float | None = None,
    limit: int | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
) -> Dataset:
    """Load and check a dataset; ``input_shape`` is the model's input shape (batch dim included).

    ``prep`` holds the image-folder conventions (``onnxprune.preprocess``). ``fraction``
    (0 < f <= 1) and ``limit`` pick a deterministic subset (fixed-seed sample, kept in file
    order). ``num_classes`` bounds the labels when known; ``class_names`` (label order, e.g. the
    training folder's) maps an image folder's class folders by name.
    """
    prep = prep or Preprocessing()
    path = Path(path)
    if not path.exists():
        raise OnnxPruneError(f"{path}: no such data file or folder")
    _check_subset_args(fraction, limit)
    if path.is_dir():
        dataset = _load_image_folder(path, input_shape, prep, fraction, limit, num_classes,
                                     class_names)
    elif path.suffix.lower() == ".npz":
        if not prep.is_default():
            raise OnnxPruneError(
                f"{path}: image preprocessing options (--mean, --std, --preset, --layout, ...) apply "
                f"to image folders only; .npz data must already be preprocessed"
            )
        dataset = _load_npz(path, fraction, limit)
    else:
        raise OnnxPruneError(f"{path}: data must be a .npz file or a folder of class sub-folders")
    _check_dataset(dataset, path, input_shape, num_classes)
    return dataset


def _check_subset_args(fraction: float | None, limit: int | None) -> None:
    if fraction is not None and not (0.0 < fraction <= 1.0):
        raise OnnxPruneError(f"fraction must be in (0, 1], got {fraction}")
    if limit is not None and limit < 1:
        raise OnnxPruneError(f"limit must be at least 1, got {limit}")


def subset_indices(count: int, fraction: float | None, limit: int | None) -> np.ndarray:
    """The deterministic subset: a fixed-seed sample of the wanted size, in original order."""
    wanted = count
    if fraction is not None:
        wanted = max(1, math.ceil(fraction * count))
    if limit is not None:
        wanted = min(wanted, limit)
    if wanted >= count:
        return np.arange(count)
    picked = np.random.default_rng(SUBSET_SEED).permutation(count)[:wanted]
    return np.sort(picked)


def _load_npz(path: Path, fraction: float | None, limit: int | None) -> Dataset:
    from onnxprune.npzdata import open_npz

    x, y = open_npz(path, lambda count: subset_indices(count, fraction, limit))
    return Dataset(x=x, y=y)


def _image_files(root: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """(class folder names, [(image path, class folder name)]), sorted; paths as plain strings
    (a listing of a million files stays small)."""
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise OnnxPruneError(f"{root}: no class sub-folders (expected {root}/<class>/<image>)")
    files = []
    for name in folders:
        with os.scandir(root / name) as entries:
            found = sorted(e.path for e in entries if e.is_file()
                           and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS)
        files.extend((path, name) for path in found)
    if not files:
        raise OnnxPruneError(f"{root}: no images found in its class sub-folders")
    return folders, files


def _class_names(labels: dict[str, int], given: Sequence[str] | None) -> tuple[str, ...]:
    """Class names in label order (a label no folder has gets its index as name)."""
    if given is not None:
        return tuple(given)
    by_label = {v: k for k, v in labels.items()}
    return tuple(by_label.get(i, str(i)) for i in range(max(labels.values()) + 1))


def _load_image_folder(root, input_shape, prep: Preprocessing, fraction, limit, num_classes,
                       class_names) -> Dataset:
    """Files and labels listed up front; each image is decoded when a sample is read."""
    prep = prep.resolved()
    layout, channels, size = geometry(input_shape, prep)
    if size is None:
        raise OnnxPruneError("the model's input size is dynamic; give the image size (--input-size H,W)")
    folders, files = _image_files(root)
    if class_names is None and prep.classes is not None:
        class_names = read_class_names(prep.classes)
    labels = label_map(folders, num_classes, class_names, root)
    files = [files[i] for i in subset_indices(len(files), fraction, limit)]
    per_channel(prep.mean, channels, "mean")  # checked before any image is decoded
    std = per_channel(prep.std, channels, "std")
    if np.any(std <= 0):
        raise OnnxPruneError(f"--std must be positive, got {list(std)}")
    source = ImageSource([f for f, _ in files], prep, layout, channels, size, str(root))
    y = np.array([labels[name] for _, name in files], dtype=np.int64)
    return Dataset(x=LazyArray(source), y=y, classes=_class_names(labels, class_names))


def _check_dataset(dataset: Dataset, path: Path, input_shape, num_classes) -> None:
    x = dataset.x
    if input_shape is not None:
        _check_shape(x.shape, input_shape, path)
    if not isinstance(x.source, ImageSource):  # decoded images are finite by construction
        bad = count_nonfinite(x)  # in chunks: memory stays bounded
        if bad:
            raise OnnxPruneError(f"{path}: 'x' contains {bad} NaN or Inf values")
    y = dataset.y
    if y is not None and len(y):
        low, high = int(y.min()), int(y.max())
        if low < 0:
            raise OnnxPruneError(f"{path}: label {low} is negative; labels must be class indices >= 0")
        if num_classes is not None and high >= num_classes:
            raise OnnxPruneError(
                f"{path}: label {high} is out of range for a model with {num_classes} classes"
            )


def _check_shape(shape: tuple[int, ...], input_shape, path: Path) -> None:
    expected = "[" + ", ".join(str(d) if d is not None else "?" for d in input_shape) + "]"
    if len(shape) != len(input_shape):
        raise OnnxPruneError(
            f"{path}: data has rank {len(shape)} {list(shape)} but the model input has rank "
            f"{len(input_shape)} {expected}"
        )
    for axis in range(1, len(shape)):
        want = input_shape[axis]
        if not _static(want) or int(want) == shape[axis]:
            continue
        what = "channel count" if axis == 1 and len(shape) >= 3 else (
            "spatial size" if len(shape) >= 3 else f"size of axis {axis}")
        raise OnnxPruneError(
            f"{path}: data {what} {shape[axis]} (axis {axis}) does not match the model input "
            f"{expected}"
        )


def _static(dim) -> bool:
    return isinstance(dim, (int, np.integer)) and int(dim) > 0


def holdout_split(count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, held-out indices), disjoint and sorted: a seeded ``fraction`` of
    ``count`` samples (at least one, and at least one left for training)."""
    if count < 2:
        raise OnnxPruneError(f"--data has {count} sample; holding out a part for the figures "
                             f"needs at least 2 (or give --eval-data)")
    held = min(count - 1, max(1, round(fraction * count)))
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[held:]), np.sort(order[:held])


def take(dataset: Dataset, indices: np.ndarray) -> Dataset:
    """The samples at ``indices`` (labels and class names kept): a view for lazy samples (an
    index list into the same source, nothing decoded), a copy for a plain array."""
    indices = np.asarray(indices)
    return Dataset(subset(dataset.x, indices),
                   None if dataset.y is None else dataset.y[indices], dataset.classes)
