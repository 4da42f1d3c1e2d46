"""How image folders become model inputs: size, pixel scale, mean/std, channel order, layout, and
how class folders map to the model's label indices. numpy (and Pillow to decode).

An image is converted to the model's channel count (1 → "L", 3 → "RGB") and sized to the model's
(H, W): by default resized to exactly (H, W); with ``resize`` (``--resize N``) torchvision-style,
its shorter side resized to N (bilinear, antialiased: Pillow's resize, as torchvision's ``Resize``
on PIL images) then center-cropped to (H, W) (``CenterCrop``: zero padding where the image is
smaller). The ``imagenet`` preset resizes the shorter side to ``round(max(H, W) * 256 / 224)``
(256 for a 224x224 input) then crops. A pixel ``p`` (0..255) becomes ``(p * pixel_scale - mean)
/ std`` per channel, in the model's channel order (RGB or BGR) and layout (NCHW or NHWC). A
preset fills the values a user did not give.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from onnxprune.errors import OnnxPruneError

LAYOUTS = ("auto", "nchw", "nhwc")
CHANNEL_ORDERS = ("rgb", "bgr")

# name -> the settings it stands for (pixel_scale, mean, std in the units after scaling)
PRESETS: dict[str, dict] = {
    "unit": {"pixel_scale": 1 / 255, "mean": (0.0,), "std": (1.0,)},  # [0, 1], the default
    "imagenet": {"pixel_scale": 1 / 255, "mean": (0.485, 0.456, 0.406),
                 "std": (0.229, 0.224, 0.225), "resize": "256/224"},
    "symmetric": {"pixel_scale": 1 / 255, "mean": (0.5,), "std": (0.5,)},  # [-1, 1] (TF/Keras)
    "raw": {"pixel_scale": 1.0, "mean": (0.0,), "std": (1.0,)},  # 0..255 pixels as they are
    "caffe": {"pixel_scale": 1.0, "mean": (103.939, 116.779, 123.68), "std": (1.0,),
              "channel_order": "bgr"},
}


@dataclass(frozen=True)
class Preprocessing:
    """The user's image-folder conventions; ``None`` fields fall back to the preset, then 'unit'."""

    input_size: tuple[int, int] | None = None  # (H, W)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    pixel_scale: float | None = None
    channel_order: str | None = None  # rgb | bgr
    layout: str = "auto"  # auto | nchw | nhwc
    preset: str | None = None
    classes: str | None = None  # a file of class names in label order, or a compress report
    resize: int | str | None = None  # shorter side N then center crop | "direct" | "256/224"

    def resolved(self) -> Preprocessing:
        """Every value filled in: the user's, else the preset's, else the 'unit' preset's."""
        if self.preset is not None and self.preset not in PRESETS:
            raise OnnxPruneError(f"unknown preset '{self.preset}' (one of {', '.join(PRESETS)})")
        base = {"channel_order": "rgb", "resize": "direct", **PRESETS["unit"],
                **PRESETS.get(self.preset or "unit")}
        filled = {k: v for k, v in base.items() if getattr(self, k) is None}
        out = replace(self, **filled)
        if out.pixel_scale is None or not out.pixel_scale > 0:
            raise OnnxPruneError(f"--pixel-scale must be positive, got {out.pixel_scale}")
        if out.channel_order not in CHANNEL_ORDERS:
            raise OnnxPruneError(f"--channel-order must be rgb or bgr, got '{out.channel_order}'")
        if out.layout not in LAYOUTS:
            raise OnnxPruneError(f"--layout must be one of {', '.join(LAYOUTS)}")
        if not (out.resize in ("direct", "256/224") or (isinstance(out.resize, int)
                                                         and out.resize > 0)):
            raise OnnxPruneError(f"--resize must be a positive size or 'direct', got "
                                 f"'{out.resize}'")
        return out

    def is_default(self) -> bool:
        return self == Preprocessing()


def _static(dim) -> bool:
    return isinstance(dim, (int, np.integer)) and int(dim) > 0


def detect_layout(input_shape: Sequence | None, layout: str = "auto") -> str:
    """'nchw' or 'nhwc' for a 4-D model input: the user's choice, else read off the shape where
    only one of axis 1 and axis 3 can be a channel axis (1 or 3 channels); NCHW when unsure."""
    if layout != "auto":
        return layout
    if input_shape is None or len(input_shape) != 4:
        return "nchw"
    first, last = input_shape[1], input_shape[3]
    first_ok = not _static(first) or int(first) in (1, 3, 4)
    last_ok = _static(last) and int(last) in (1, 3, 4)
    if last_ok and not first_ok:
        return "nhwc"
    if last_ok and not _static(first):
        return "nhwc"  # [N, ?, ?, 3]: a channels-last input with dynamic spatial dims
    return "nchw"


def geometry(input_shape: Sequence | None, prep: Preprocessing) -> tuple[str, int, tuple | None]:
    """(layout, channels, (H, W) or None) of an image input for this model."""
    layout = detect_layout(input_shape, prep.layout)
    channels, size = 3, tuple(prep.input_size) if prep.input_size is not None else None
    if input_shape is not None:
        if len(input_shape) != 4:
            raise OnnxPruneError(f"image folders need a 4-D model input; the model's input has "
                                 f"rank {len(input_shape)}")
        c_axis, h_axis, w_axis = (1, 2, 3) if layout == "nchw" else (3, 1, 2)
        if _static(input_shape[c_axis]):
            channels = int(input_shape[c_axis])
        if size is None and _static(input_shape[h_axis]) and _static(input_shape[w_axis]):
            size = (int(input_shape[h_axis]), int(input_shape[w_axis]))
    if channels not in (1, 3):
        other = "nhwc" if layout == "nchw" else "nchw"
        raise OnnxPruneError(
            f"the model input {_shape_text(input_shape)} read as {layout.upper()} has {channels} "
            f"channels, but image folders give 1 or 3 channels (if the input is {other.upper()}, pass "
            f"--layout {other})")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise OnnxPruneError(f"input size must be two positive integers (H, W), got {size}")
    return layout, channels, size


def _shape_text(shape) -> str:
    if shape is None:
        return "[?]"
    return "[" + ", ".join(str(d) if d is not None else "?" for d in shape) + "]"


def per_channel(values, channels: int, what: str) -> np.ndarray:
    arr = np.asarray(list(values), dtype=np.float32)
    if arr.size == 1:
        return np.full(channels, float(arr[0]), dtype=np.float32)
    if arr.size != channels:
        raise OnnxPruneError(f"--{what} has {arr.size} values but the model expects {channels} "
                             f"channels")
    return arr


def to_model_input(pixels: np.ndarray, prep: Preprocessing, layout: str) -> np.ndarray:
    """HxWxC (or HxW) uint8-valued RGB pixels -> one model input (CHW or HWC), float32."""
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if prep.channel_order == "bgr" and pixels.shape[2] == 3:
        pixels = pixels[:, :, ::-1]
    channels = pixels.shape[2]
    mean = per_channel(prep.mean, channels, "mean")
    std = per_channel(prep.std, channels, "std")
    if np.any(std <= 0):
        raise OnnxPruneError(f"--std must be positive, got {list(std)}")
    out = (pixels * np.float32(prep.pixel_scale) - mean) / std
    return np.ascontiguousarray(out.transpose(2, 0, 1) if layout == "nchw" else out,
                                dtype=np.float32)


def shorter_side(prep: Preprocessing, size: tuple[int, int]) -> int | None:
    """The size the shorter image side is resized to before the center crop to ``size`` (H, W),
    or None for a direct resize to ``size`` (``prep`` resolved)."""
    if prep.resize == "direct":
        return None
    if prep.resize == "256/224":
        return round(max(size) * 256 / 224)
    return int(prep.resize)


def resize_and_crop(image, short: int, size: tuple[int, int]) -> np.ndarray:
    """torchvision's ``Resize(short)`` then ``CenterCrop(size)`` of a PIL image, as an array."""
    from PIL import Image

    w, h = image.size
    if w <= h:
        new_w, new_h = short, int(short * h / w)
    else:
        new_w, new_h = int(short * w / h), short
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.BILINEAR)
    pixels = np.asarray(image)
    crop_h, crop_w = size
    pad_h, pad_w = max(0, crop_h - new_h), max(0, crop_w - new_w)
    if pad_h or pad_w:  # CenterCrop pads with zeros, left/top taking the smaller half
        pads = [(pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2)]
        pixels = np.pad(pixels, pads + [(0, 0)] * (pixels.ndim - 2))
    top = int(round((pixels.shape[0] - crop_h) / 2.0))
    left = int(round((pixels.shape[1] - crop_w) / 2.0))
    return pixels[top:top + crop_h, left:left + crop_w]


def decode_image(file, prep: Preprocessing, layout: str, channels: int,
                 size: tuple[int, int]) -> np.ndarray:
    """One image file as a model input (CHW or HWC float32); ``prep`` resolved. A file that
    cannot be decoded is a one-line error naming it."""
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    short = shorter_side(prep, size)
    try:
        with Image.open(file) as image:
            image = image.convert(mode)
            if short is None:
                pixels = np.asarray(image.resize((size[1], size[0]), Image.BILINEAR),
                                    dtype=np.float32)
            else:
                pixels = resize_and_crop(image, short, size).astype(np.float32)
    except Exception as exc:
        reason = (" ".join(str(exc).split()) or type(exc).__name__)[:200]
        raise OnnxPruneError(f"{file}: cannot read image ({reason})") from None
    return to_model_input(pixels, prep, layout)


# --- labels by class name --------------------------------------------------------------------


def read_class_names(path: str | Path) -> tuple[str, ...]:
    """Class names in label order: one a line in a text file, or the ``data_classes`` a compress
    report recorded."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OnnxPruneError(f"{path}: cannot read the class list ({exc.__class__.__name__})") from None
    if path.suffix.lower() == ".json":
        try:
            names = json.loads(text).get("data_classes")
        except (ValueError, AttributeError):
            names = None
        if not isinstance(names, list) or not names:
            raise OnnxPruneError(f"{path}: not a compress report with a 'data_classes' list")
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise OnnxPruneError(f"{path}: the class list is empty")
    if len(set(names)) != len(names):
        raise OnnxPruneError(f"{path}: the class list names a class twice")
    return tuple(str(n) for n in names)


def label_map(folders: Sequence[str], num_classes: int | None,
              classes: Sequence[str] | None, root: Path) -> dict[str, int]:
    """Class folder name -> label index: by the given class list, by integer folder names, or by
    sorted names when the folders are exactly the model's classes; never a silent shift."""
    if classes is not None:
        unknown = [f for f in folders if f not in classes]
        if unknown:
            raise OnnxPruneError(f"{root}: class folder '{unknown[0]}' is not in the class list "
                                 f"({len(classes)} names)")
        if num_classes is not None and len(classes) != num_classes:
            raise OnnxPruneError(f"the class list has {len(classes)} names but the model has "
                                 f"{num_classes} outputs")
        return {f: classes.index(f) for f in folders}
    if all(f.isdigit() for f in folders):
        labels = {f: int(f) for f in folders}
        if num_classes is not None and max(labels.values()) >= num_classes:
            raise OnnxPruneError(f"{root}: class folder '{max(folders, key=int)}' is out of range "
                                 f"for a model with {num_classes} classes")
        return labels
    if num_classes is not None and len(folders) != num_classes:
        raise OnnxPruneError(
            f"{root}: {len(folders)} class folders but the model has {num_classes} classes; give "
            f"--classes FILE (one class name a line, in label order) so labels map by name")
    return {f: i for i, f in enumerate(sorted(folders))}
