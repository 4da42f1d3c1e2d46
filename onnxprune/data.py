"""Evaluation data for ``validate`` (and later ``compress``): a ``.npz`` file or an image folder.

numpy and Pillow only. Two layouts are accepted:

- ``data.npz`` with a float array ``x`` already preprocessed in the model's input layout, and an
  optional integer array ``y`` of class labels. Pickled (object) arrays are never loaded.
- a folder of images in class sub-folders (``root/<class>/<image>``): class names sorted give the
  labels 0..K-1; each image is converted to the model's channel count (1 → "L", 3 → "RGB"),
  resized to ``input_size`` (H, W), scaled to [0, 1], normalized ``(x - mean) / std`` per channel
  and laid out NCHW.

Every problem is a one-line ``OnnxPruneError`` with exit code 2.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxprune.errors import OnnxPruneError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
SUBSET_SEED = 0

Dim = int | str | None  # a model input dim: a size, a symbolic name, or unknown


@dataclass(frozen=True)
class Dataset:
    """Inputs ``x`` (float32, model layout) and optional int64 labels ``y``."""

    x: np.ndarray
    y: np.ndarray | None = None
    classes: tuple[str, ...] | None = None  # class folder names, for image folders

    def __len__(self) -> int:
        return int(self.x.shape[0])


def load_dataset(
    path: str | os.PathLike,
    input_shape: Sequence[Dim] | None = None,
    input_size: tuple[int, int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    fraction: float | None = None,
    limit: int | None = None,
    num_classes: int | None = None,
) -> Dataset:
    """Load and check a dataset; ``input_shape`` is the model's input shape (batch dim included).

    ``fraction`` (0 < f <= 1) and ``limit`` pick a deterministic subset (fixed-seed sample, kept in
    file order). ``num_classes`` bounds the labels when known.
    """
    path = Path(path)
    if not path.exists():
        raise OnnxPruneError(f"{path}: no such data file or folder")
    _check_subset_args(fraction, limit)
    if path.is_dir():
        dataset = _load_image_folder(path, input_shape, input_size, mean, std, fraction, limit)
    elif path.suffix.lower() == ".npz":
        if mean is not None or std is not None:
            raise OnnxPruneError(
                f"{path}: mean/std apply to image folders only; .npz data must already be preprocessed"
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
    import zipfile

    if not zipfile.is_zipfile(path):
        raise OnnxPruneError(f"{path}: not a readable .npz file (not a zip archive of arrays)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            if "x" not in keys:
                raise OnnxPruneError(
                    f"{path}: no array 'x' in the .npz (found: {', '.join(keys) or 'nothing'})"
                )
            x = archive["x"]
            y = archive["y"] if "y" in keys else None
    except OnnxPruneError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise OnnxPruneError(f"{path}: contains object (pickled) arrays; refused") from None
        raise OnnxPruneError(f"{path}: not a readable .npz file ({_short(exc)})") from None
    except Exception as exc:  # zipfile.BadZipFile, OSError, ...
        raise OnnxPruneError(f"{path}: not a readable .npz file ({_short(exc)})") from None
    if x.ndim == 0 or x.shape[0] == 0:
        raise OnnxPruneError(f"{path}: array 'x' is empty")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise OnnxPruneError(f"{path}: array 'x' has dtype {x.dtype}; expected numbers")
    labels = _labels(y, path) if y is not None else None
    if labels is not None and len(labels) != x.shape[0]:
        raise OnnxPruneError(f"{path}: 'y' has {len(labels)} labels but 'x' has {x.shape[0]} samples")
    keep = subset_indices(x.shape[0], fraction, limit)
    x = np.ascontiguousarray(x[keep], dtype=np.float32)
    return Dataset(x=x, y=None if labels is None else labels[keep])


def _labels(y: np.ndarray, path: Path) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise OnnxPruneError(f"{path}: labels 'y' must be a 1-D array of class indices, got shape {y.shape}")
    if np.issubdtype(y.dtype, np.integer):
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        return y.astype(np.int64)
    raise OnnxPruneError(f"{path}: labels 'y' must be integers, got dtype {y.dtype}")


def _image_geometry(input_shape, input_size) -> tuple[int, tuple[int, int] | None]:
    """(channels, (H, W) or None) for an image folder, from the model's input shape."""
    channels = 3
    size = tuple(input_size) if input_size is not None else None
    if input_shape is not None:
        if len(input_shape) != 4:
            raise OnnxPruneError(
                f"image folders need a 4-D (NCHW) model input; the model's input has rank {len(input_shape)}"
            )
        if _static(input_shape[1]):
            channels = int(input_shape[1])
        if size is None and _static(input_shape[2]) and _static(input_shape[3]):
            size = (int(input_shape[2]), int(input_shape[3]))
    if channels not in (1, 3):
        raise OnnxPruneError(f"image folders support 1 or 3 channels; the model expects {channels}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise OnnxPruneError(f"input size must be two positive integers (H, W), got {size}")
    return channels, size


def _image_files(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise OnnxPruneError(f"{root}: no class sub-folders (expected {root}/<class>/<image>)")
    files = []
    for label, name in enumerate(classes):
        for item in sorted((root / name).iterdir()):
            if item.is_file() and item.suffix.lower() in IMAGE_EXTENSIONS:
                files.append((item, label))
    if not files:
        raise OnnxPruneError(f"{root}: no images found in its class sub-folders")
    return classes, files


def _load_image_folder(root, input_shape, input_size, mean, std, fraction, limit) -> Dataset:
    from PIL import Image

    channels, size = _image_geometry(input_shape, input_size)
    if size is None:
        raise OnnxPruneError("the model's input size is dynamic; give the image size (--input-size H,W)")
    mean_arr = _per_channel(mean, channels, 0.0, "mean")
    std_arr = _per_channel(std, channels, 1.0, "std")
    if np.any(std_arr <= 0):
        raise OnnxPruneError(f"std must be positive, got {list(std_arr)}")
    classes, files = _image_files(root)
    files = [files[i] for i in subset_indices(len(files), fraction, limit)]
    mode = "L" if channels == 1 else "RGB"
    x = np.empty((len(files), channels, size[0], size[1]), dtype=np.float32)
    for i, (file, _) in enumerate(files):
        try:
            with Image.open(file) as image:
                image = image.convert(mode).resize((size[1], size[0]), Image.BILINEAR)
                pixels = np.asarray(image, dtype=np.float32) / 255.0
        except Exception as exc:
            raise OnnxPruneError(f"{file}: cannot read image ({_short(exc)})") from None
        pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        x[i] = (pixels - mean_arr[:, None, None]) / std_arr[:, None, None]
    y = np.array([label for _, label in files], dtype=np.int64)
    return Dataset(x=x, y=y, classes=tuple(classes))


def _per_channel(values, channels: int, default: float, what: str) -> np.ndarray:
    if values is None:
        return np.full(channels, default, dtype=np.float32)
    arr = np.asarray(list(values), dtype=np.float32)
    if arr.size == 1:
        return np.full(channels, float(arr[0]), dtype=np.float32)
    if arr.size != channels:
        raise OnnxPruneError(f"{what} has {arr.size} values but the model expects {channels} channels")
    return arr


def _check_dataset(dataset: Dataset, path: Path, input_shape, num_classes) -> None:
    x = dataset.x
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise OnnxPruneError(f"{path}: 'x' contains {bad} NaN or Inf values")
    if input_shape is not None:
        _check_shape(x.shape, input_shape, path)
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


def _short(exc: BaseException) -> str:
    return (" ".join(str(exc).split()) or type(exc).__name__)[:200]
