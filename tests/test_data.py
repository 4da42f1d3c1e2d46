"""load_dataset: .npz and image folders, checks against the model input, deterministic subsets."""

import numpy as np
import pytest
from PIL import Image

from onnxprune.data import load_dataset, subset_indices
from onnxprune.errors import EXIT_BAD_INPUT, OnnxPruneError
from onnxprune.preprocess import Preprocessing

SHAPE = ["N", 3, 8, 8]


def _npz(tmp_path, name="d.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _bad(match, *args, **kwargs):
    with pytest.raises(OnnxPruneError, match=match) as info:
        load_dataset(*args, **kwargs)
    assert info.value.exit_code == EXIT_BAD_INPUT
    assert "\n" not in info.value.message
    return info.value


def test_npz_loads_float32_and_int64(tmp_path):
    x = np.arange(4 * 3 * 8 * 8, dtype=np.float64).reshape(4, 3, 8, 8)
    path = _npz(tmp_path, x=x, y=np.array([0, 1, 2, 1], dtype=np.int32))
    data = load_dataset(path, input_shape=SHAPE, num_classes=3)
    assert data.x.dtype == np.float32 and data.x.shape == (4, 3, 8, 8)
    assert data.y.dtype == np.int64 and data.y.tolist() == [0, 1, 2, 1]
    np.testing.assert_array_equal(data.x, x.astype(np.float32))


def test_npz_without_labels(tmp_path):
    data = load_dataset(_npz(tmp_path, x=np.zeros((2, 3, 8, 8))), input_shape=SHAPE)
    assert data.y is None and len(data) == 2


def test_subset_is_deterministic_and_ordered(tmp_path):
    x = np.arange(50, dtype=np.float32).reshape(50, 1)
    path = _npz(tmp_path, x=x, y=np.arange(50) % 3)
    first = load_dataset(path, limit=7)
    second = load_dataset(path, limit=7)
    assert len(first) == 7
    np.testing.assert_array_equal(first.x, second.x)
    values = first.x[:, 0]
    assert np.all(np.diff(values) > 0)  # kept in file order
    np.testing.assert_array_equal(first.y, values.astype(np.int64) % 3)  # x and y stay paired
    assert len(load_dataset(path, fraction=0.1)) == 5
    assert len(load_dataset(path, fraction=0.5, limit=3)) == 3
    assert subset_indices(5, None, 10).tolist() == [0, 1, 2, 3, 4]


def test_wrong_channel_count(tmp_path):
    path = _npz(tmp_path, x=np.zeros((2, 1, 8, 8)))
    _bad("channel count 1", path, input_shape=SHAPE)


def test_wrong_spatial_size_and_rank(tmp_path):
    _bad("spatial size 9", _npz(tmp_path, x=np.zeros((2, 3, 9, 8))), input_shape=SHAPE)
    _bad("rank 3", _npz(tmp_path, "r.npz", x=np.zeros((2, 8, 8))), input_shape=SHAPE)


def test_dynamic_dims_are_not_checked(tmp_path):
    data = load_dataset(_npz(tmp_path, x=np.zeros((2, 3, 5, 7))), input_shape=["N", 3, "H", None])
    assert data.x.shape == (2, 3, 5, 7)


def test_labels_out_of_range(tmp_path):
    path = _npz(tmp_path, x=np.zeros((3, 3, 8, 8)), y=np.array([0, 5, 1]))
    _bad("label 5 is out of range for a model with 5 classes", path, input_shape=SHAPE, num_classes=5)


def test_negative_and_non_integer_labels(tmp_path):
    _bad("negative", _npz(tmp_path, x=np.zeros((2, 3, 8, 8)), y=np.array([0, -1])))
    _bad("integers", _npz(tmp_path, "f.npz", x=np.zeros((2, 3, 8, 8)), y=np.array([0.5, 1.0])))


def test_label_count_mismatch(tmp_path):
    _bad("2 labels but 'x' has 3", _npz(tmp_path, x=np.zeros((3, 3, 8, 8)), y=np.array([0, 1])))


def test_missing_x(tmp_path):
    _bad("no array 'x'.*found: inputs", _npz(tmp_path, inputs=np.zeros((2, 3, 8, 8))))


def test_empty_x(tmp_path):
    _bad("empty", _npz(tmp_path, x=np.zeros((0, 3, 8, 8))))


def test_nan_and_inf(tmp_path):
    x = np.zeros((2, 3, 8, 8), dtype=np.float32)
    x[0, 0, 0, 0] = np.nan
    x[1, 1, 1, 1] = np.inf
    _bad("2 NaN or Inf", _npz(tmp_path, x=x), input_shape=SHAPE)


def test_pickled_arrays_refused(tmp_path):
    path = _npz(tmp_path, x=np.array([{"a": 1}, None], dtype=object))
    _bad("pickled", path)


def test_not_an_npz_and_missing_path(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    _bad("not a readable .npz", junk)
    _bad("no such data", tmp_path / "missing.npz")
    other = tmp_path / "data.csv"
    other.write_text("1,2\n")
    _bad(".npz file or a folder", other)


def test_mean_std_refused_for_npz(tmp_path):
    _bad("image folders only", _npz(tmp_path, x=np.zeros((1, 3, 8, 8))), prep=Preprocessing(mean=(0.5,)))


def _image(path, color, size=(12, 10), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_image_folder_shape_labels_normalization(tmp_path):
    root = tmp_path / "images"
    _image(root / "cat" / "a.png", (255, 0, 0))
    _image(root / "cat" / "b.png", (255, 0, 0))
    _image(root / "dog" / "c.png", (0, 0, 255))
    (root / "dog" / "notes.txt").write_text("ignored")
    data = load_dataset(root, input_shape=SHAPE, prep=Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)), num_classes=2)
    assert data.x.shape == (3, 3, 8, 8) and data.x.dtype == np.float32
    assert data.y.tolist() == [0, 0, 1]
    assert data.classes == ("cat", "dog")
    np.testing.assert_allclose(data.x[0, 0], 1.0, atol=1e-6)  # red: (1 - 0.5) / 0.5
    np.testing.assert_allclose(data.x[0, 1], -1.0, atol=1e-6)
    np.testing.assert_allclose(data.x[2, 2], 1.0, atol=1e-6)  # blue


def test_image_folder_grayscale_and_explicit_size(tmp_path):
    root = tmp_path / "gray"
    _image(root / "a" / "x.png", (255, 0, 0))
    data = load_dataset(root, input_shape=["N", 1, "H", "W"], prep=Preprocessing(input_size=(4, 6)))
    assert data.x.shape == (1, 1, 4, 6)
    expected = round(0.299 * 255) / 255.0  # Pillow's "L" of pure red
    np.testing.assert_allclose(data.x, expected, atol=2 / 255)


def test_image_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _bad("no class sub-folders", empty, input_shape=SHAPE)
    (empty / "cls").mkdir()
    _bad("no images", empty, input_shape=SHAPE)
    _image(tmp_path / "three" / "a" / "x.png", (1, 2, 3))
    _image(tmp_path / "three" / "b" / "y.png", (1, 2, 3))
    _image(tmp_path / "three" / "c" / "z.png", (1, 2, 3))
    _bad("3 class folders but the model has 2 classes", tmp_path / "three", input_shape=SHAPE,
         num_classes=2)
    _bad("--input-size", tmp_path / "three", input_shape=["N", 3, "H", "W"])
    _bad("std has 2 values", tmp_path / "three", input_shape=SHAPE, prep=Preprocessing(std=(0.5, 0.5)))
    _bad("1 or 3 channels", tmp_path / "three", input_shape=["N", 4, 8, 8])
