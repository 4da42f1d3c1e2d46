"""A user's data conventions: labels by class name, NHWC/BGR/raw-pixel models, presets."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from onnxprune.data import load_dataset
from onnxprune.errors import OnnxPruneError
from onnxprune.preprocess import PRESETS, Preprocessing, detect_layout

RNG = np.random.default_rng(0)


def _folder(root, classes, per_class=2, size=(6, 5)):
    """Random RGB images root/<class>/<i>.png; returns {path: pixels HxWx3 uint8}."""
    pixels = {}
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            array = RNG.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            path = root / name / f"{i}.png"
            Image.fromarray(array).save(path)
            pixels[path] = array
    return pixels


def _classes_file(tmp_path, names):
    path = tmp_path / "classes.txt"
    path.write_text("\n".join(names) + "\n")
    return str(path)


ALL = ["ankle_boot", "bag", "coat", "dress", "pullover"]


def test_a_folder_missing_a_class_maps_by_name(tmp_path):
    root = tmp_path / "val"
    _folder(root, ["bag", "dress"])  # 2 of the model's 5 classes
    data = load_dataset(root, input_shape=[None, 3, 5, 6], num_classes=5,
                        prep=Preprocessing(classes=_classes_file(tmp_path, ALL)))
    assert data.y.tolist() == [1, 1, 3, 3]  # 'bag' is label 1, 'dress' label 3: not 0 and 1
    assert data.classes == tuple(ALL)


def test_a_folder_missing_a_class_without_a_list_is_refused(tmp_path):
    root = tmp_path / "val"
    _folder(root, ["bag", "dress"])
    with pytest.raises(OnnxPruneError, match="2 class folders but the model has 5 classes.*--classes"):
        load_dataset(root, input_shape=[None, 3, 5, 6], num_classes=5)


def test_training_class_names_map_the_eval_folder(tmp_path):
    _folder(tmp_path / "train", ALL, per_class=1)
    _folder(tmp_path / "val", ["coat"], per_class=1)
    train = load_dataset(tmp_path / "train", input_shape=[None, 3, 5, 6], num_classes=5)
    val = load_dataset(tmp_path / "val", input_shape=[None, 3, 5, 6], num_classes=5,
                       class_names=train.classes)
    assert val.y.tolist() == [ALL.index("coat")]


def test_unknown_class_folder_and_integer_folders(tmp_path):
    _folder(tmp_path / "odd", ["bag", "hat"], per_class=1)
    with pytest.raises(OnnxPruneError, match="'hat' is not in the class list"):
        load_dataset(tmp_path / "odd", input_shape=[None, 3, 5, 6],
                     prep=Preprocessing(classes=_classes_file(tmp_path, ALL)))
    _folder(tmp_path / "digits", ["3", "7"], per_class=1)
    data = load_dataset(tmp_path / "digits", input_shape=[None, 3, 5, 6], num_classes=10)
    assert data.y.tolist() == [3, 7]  # integer folder names are the labels


def test_class_list_from_a_compress_report(tmp_path):
    report = tmp_path / "r.json"
    report.write_text('{"data_classes": ["ankle_boot", "bag", "coat", "dress", "pullover"]}')
    _folder(tmp_path / "val", ["pullover"], per_class=1)
    data = load_dataset(tmp_path / "val", input_shape=[None, 3, 5, 6], num_classes=5,
                        prep=Preprocessing(classes=str(report)))
    assert data.y.tolist() == [4]


def _hand(pixels, scale, mean, std, bgr=False, nhwc=False):
    x = pixels.astype(np.float32)
    if bgr:
        x = x[:, :, ::-1]
    x = (x * np.float32(scale) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return x if nhwc else x.transpose(2, 0, 1)


@pytest.mark.parametrize("shape,prep,hand", [
    ([None, 5, 6, 3], Preprocessing(), dict(scale=1 / 255, mean=0, std=1, nhwc=True)),
    ([None, 3, 5, 6], Preprocessing(channel_order="bgr", mean=(0.1, 0.2, 0.3), std=(0.5,)),
     dict(scale=1 / 255, mean=(0.3, 0.2, 0.1)[::-1], std=0.5, bgr=True)),
    ([None, 3, 5, 6], Preprocessing(pixel_scale=1.0), dict(scale=1.0, mean=0, std=1)),
    ([None, 5, 6, 3], Preprocessing(preset="caffe"),
     dict(scale=1.0, mean=PRESETS["caffe"]["mean"], std=1, bgr=True, nhwc=True)),
    ([None, 3, 5, 6], Preprocessing(preset="imagenet", resize="direct"),
     dict(scale=1 / 255, mean=PRESETS["imagenet"]["mean"], std=PRESETS["imagenet"]["std"])),
])
def test_layouts_channel_orders_and_pixel_scales(tmp_path, shape, prep, hand):
    pixels = _folder(tmp_path / "d", ["a"], per_class=2)
    data = load_dataset(tmp_path / "d", input_shape=shape, prep=prep)
    expected = np.stack([_hand(p, **hand) for p in pixels.values()])
    np.testing.assert_allclose(data.x, expected, rtol=1e-6, atol=1e-5)


def test_layout_detection_and_its_errors(tmp_path):
    assert detect_layout([1, 224, 224, 3]) == "nhwc"
    assert detect_layout(["N", "H", "W", 3]) == "nhwc"
    assert detect_layout([1, 3, 224, 224]) == "nchw"
    assert detect_layout(["N", 3, "H", "W"]) == "nchw"
    assert detect_layout([1, 3, 224, 224], "nhwc") == "nhwc"
    _folder(tmp_path / "d", ["a"], per_class=1)
    with pytest.raises(OnnxPruneError, match="read as NCHW has 224 channels.*--layout nhwc"):
        load_dataset(tmp_path / "d", input_shape=[1, 224, 224, 3], prep=Preprocessing(layout="nchw"))


def test_bad_preprocessing_values_are_one_line_errors(tmp_path):
    _folder(tmp_path / "d", ["a"], per_class=1)
    with pytest.raises(OnnxPruneError, match="--mean has 2 values"):
        load_dataset(tmp_path / "d", input_shape=[None, 3, 5, 6], prep=Preprocessing(mean=(1, 2)))
    with pytest.raises(OnnxPruneError, match="unknown preset"):
        load_dataset(tmp_path / "d", input_shape=[None, 3, 5, 6], prep=Preprocessing(preset="x"))
