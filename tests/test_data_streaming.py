"""Streaming data: a memory-mapped .npz equals the eager load, a compressed .npz subset decodes in
bounded memory, image folders decode only the samples read, torchvision-style resize + crop, and
decode errors while streaming are one line, exit 2."""

from __future__ import annotations

import gc
import os
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import onnxprune.lazydata as lazydata
import onnxprune.npzdata as npzdata
from onnxprune.cli import main
from onnxprune.data import load_dataset, subset_indices, take
from onnxprune.errors import EXIT_BAD_INPUT, OnnxPruneError
from onnxprune.lazydata import LazyArray, MemmapSource, iter_batches
from onnxprune.preprocess import Preprocessing, resize_and_crop


def _eager(path):
    with np.load(path) as archive:
        return archive["x"].astype(np.float32), archive["y"] if "y" in archive.files else None


@pytest.mark.parametrize("order", ["C", "F"])
def test_a_stored_npz_is_memory_mapped_and_equals_the_eager_load(tmp_path, order):
    rng = np.random.default_rng(0)
    x = np.asarray(rng.standard_normal((40, 3, 4, 5)), order=order)  # float64 on disk
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=np.arange(40) % 7)
    data = load_dataset(path, input_shape=["N", 3, 4, 5])
    assert isinstance(data.x, LazyArray) and isinstance(data.x.source, MemmapSource)
    assert data.x.shape == (40, 3, 4, 5) and data.x.dtype == np.float32 and len(data.x) == 40
    eager, labels = _eager(path)
    for key in (slice(3, 17), np.array([39, 0, 5, 5, 12]), 7, -1, (slice(None), 1),
                np.arange(40) % 3 == 0):
        np.testing.assert_array_equal(data.x[key], eager[key])
    held = take(data, np.array([30, 2, 11]))
    assert isinstance(held.x, LazyArray) and held.x.source is data.x.source  # a view, no copy
    np.testing.assert_array_equal(held.x[:], eager[[30, 2, 11]])
    assert held.y.tolist() == labels[[30, 2, 11]].tolist()
    part = load_dataset(path, limit=9)
    keep = subset_indices(40, None, 9)
    np.testing.assert_array_equal(part.x[:], eager[keep])
    np.testing.assert_array_equal(np.asarray(part.x), eager[keep])
    assert part.y.tolist() == labels[keep].tolist()


def _big_compressed(tmp_path, rows=1024, width=16384):
    """A 64 MiB float32 x that compresses to almost nothing; row r holds r in column 0."""
    x = np.zeros((rows, width), dtype=np.float32)
    x[:, 0] = np.arange(rows)
    x[:, -1] = -np.arange(rows)
    path = tmp_path / "big.npz"
    np.savez_compressed(path, x=x, y=np.arange(rows) % 10)
    assert os.path.getsize(path) < x.nbytes // 50
    return path, x.nbytes


def test_a_compressed_npz_subset_decodes_in_bounded_memory(tmp_path, monkeypatch):
    path, full = _big_compressed(tmp_path)
    monkeypatch.setattr(npzdata, "STREAM_BYTES", 1 << 20)
    monkeypatch.setattr(lazydata, "CHUNK_BYTES", 1 << 20)
    gc.collect()
    tracemalloc.start()
    try:
        data = load_dataset(path, limit=12)
        batch = data.x[np.arange(12)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    keep = subset_indices(1024, None, 12)
    assert batch[:, 0].tolist() == keep.tolist() and batch[:, -1].tolist() == (-keep).tolist()
    assert data.y.tolist() == (keep % 10).tolist()
    assert peak < full / 8, f"peak {peak / 2**20:.1f} MiB for a {full / 2**20:.0f} MiB array"


def test_a_large_compressed_npz_spills_to_a_mapped_temporary_file(tmp_path, monkeypatch):
    path, full = _big_compressed(tmp_path)
    monkeypatch.setattr(npzdata, "STREAM_BYTES", 1 << 20)
    monkeypatch.setattr(npzdata, "IN_MEMORY_BYTES", 4 << 20)
    monkeypatch.setattr(lazydata, "CHUNK_BYTES", 1 << 20)
    gc.collect()
    tracemalloc.start()
    try:
        data = load_dataset(path)  # every row selected: more than the in-memory budget
        rows = data.x[np.array([1023, 0, 500])]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(data.x.source, MemmapSource)
    spilled = data.x.source.path
    assert os.path.exists(spilled) and rows[:, 0].tolist() == [1023, 0, 500]
    assert peak < full / 8, f"peak {peak / 2**20:.1f} MiB for a {full / 2**20:.0f} MiB array"
    del data, rows
    gc.collect()
    assert not os.path.exists(spilled)  # removed once nothing uses it


def test_a_compressed_npz_checks_headers_and_nan_in_the_selection(tmp_path):
    x = np.ones((6, 2), dtype=np.float32)
    x[4, 1] = np.nan
    np.savez_compressed(tmp_path / "n.npz", x=x)
    with pytest.raises(OnnxPruneError, match="1 NaN or Inf"):
        load_dataset(tmp_path / "n.npz")
    np.savez_compressed(tmp_path / "o.npz", x=np.array([None, 1], dtype=object))
    with pytest.raises(OnnxPruneError, match="pickled"):
        load_dataset(tmp_path / "o.npz")
    raw = (tmp_path / "n.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[:len(raw) // 2] + raw[-200:])
    with pytest.raises(OnnxPruneError, match="cut.npz") as info:
        load_dataset(tmp_path / "cut.npz")
    assert "\n" not in info.value.message and info.value.exit_code == EXIT_BAD_INPUT


def _folder(root, count, size=(10, 8), classes=("0", "1")):
    rng = np.random.default_rng(1)
    files = []
    for i in range(count):
        folder = root / classes[i % len(classes)]
        folder.mkdir(parents=True, exist_ok=True)
        array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        path = folder / f"{i:03d}.png"
        Image.fromarray(array).save(path)
        files.append(path)
    return files


def test_an_image_folder_with_a_limit_decodes_only_the_chosen_files(tmp_path, monkeypatch):
    _folder(tmp_path / "imgs", 30)
    decoded = []
    real = lazydata.decode_image

    def counting(file, *args):
        decoded.append(os.path.basename(file))
        return real(file, *args)

    monkeypatch.setattr(lazydata, "decode_image", counting)
    data = load_dataset(tmp_path / "imgs", input_shape=["N", 3, 8, 10], limit=5)
    assert decoded == [] and data.x.shape == (5, 3, 8, 10)  # listing decodes nothing
    chosen = [data.x.source.files[r] for r in data.x.rows]
    batches = [b for _, b in iter_batches(data.x, 2)]
    assert sorted(decoded) == sorted(os.path.basename(f) for f in chosen) and len(decoded) == 5
    assert sum(len(b) for b in batches) == 5
    decoded.clear()
    data.x[[4, 1]]
    assert decoded == [os.path.basename(chosen[4]), os.path.basename(chosen[1])]


def test_resize_then_center_crop_matches_a_hand_computed_reference():
    pixels = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)  # H 6, W 8
    image = Image.fromarray(pixels)
    # shorter side already 6: no resampling; crop 4x4: top round(1.0) = 1, left round(2.0) = 2
    np.testing.assert_array_equal(resize_and_crop(image, 6, (4, 4)), pixels[1:5, 2:6])
    # crop 3x5: top round(1.5) = 2 (round half to even, as torchvision), left round(1.5) = 2
    np.testing.assert_array_equal(resize_and_crop(image, 6, (3, 5)), pixels[2:5, 2:7])
    # shorter side 6 -> 3: the long side int(3 * 8 / 6) = 4, Pillow's bilinear, crop 2x2 at (0, 1)
    small = np.asarray(image.resize((4, 3), Image.BILINEAR))
    np.testing.assert_array_equal(resize_and_crop(image, 3, (2, 2)), small[0:2, 1:3])
    # a crop larger than the image is zero-padded around it (CenterCrop's padding)
    padded = resize_and_crop(image, 6, (8, 8))
    assert padded.shape == (8, 8, 3)
    np.testing.assert_array_equal(padded[1:7], pixels)
    assert not padded[0].any() and not padded[7].any()


def test_the_imagenet_preset_resizes_by_256_over_224_then_crops(tmp_path):
    files = _folder(tmp_path / "imgs", 1, size=(12, 9), classes=("0",))
    # input 7x7: shorter side round(7 * 256 / 224) = 8, so 9x12 -> 8x10 (int(8 * 12 / 9)),
    # then the centre 7x7 at top round(0.5) = 0, left round(1.5) = 2
    data = load_dataset(tmp_path / "imgs", input_shape=[None, 3, 7, 7],
                        prep=Preprocessing(preset="imagenet"))
    with Image.open(files[0]) as image:
        resized = np.asarray(image.convert("RGB").resize((10, 8), Image.BILINEAR), np.float32)
    crop = resized[0:7, 2:9]
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = ((crop / 255 - mean) / std).transpose(2, 0, 1)
    np.testing.assert_allclose(data.x[0], expected, rtol=1e-5, atol=1e-5)
    direct = load_dataset(tmp_path / "imgs", input_shape=[None, 3, 7, 7],
                          prep=Preprocessing(preset="imagenet", resize="direct"))
    assert not np.allclose(direct.x[0], data.x[0])
    explicit = load_dataset(tmp_path / "imgs", input_shape=[None, 3, 7, 7],
                            prep=Preprocessing(preset="imagenet", resize=8))
    np.testing.assert_array_equal(explicit.x[0], data.x[0])
    with pytest.raises(OnnxPruneError, match="--resize"):
        load_dataset(tmp_path / "imgs", input_shape=[None, 3, 7, 7],
                     prep=Preprocessing(resize="big"))


def _corrupt_folder(tmp_path):
    files = _folder(tmp_path / "imgs", 6, size=(28, 28))
    broken = files[3]
    broken.write_bytes(broken.read_bytes()[:60])  # a truncated PNG: the header still opens
    return broken


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_corrupt_image_in_a_folder_is_one_line_exit_2(tmp_path, models_dir, workers):
    broken = _corrupt_folder(tmp_path)
    model = str(models_dir / "fashion_resnet.onnx")
    result = CliRunner().invoke(main, ["validate", model, model, "--data",
                                       str(tmp_path / "imgs"), "--workers", workers])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(broken) in lines[0] and "cannot read image" in lines[0], lines
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["compress", "validate", "finetune"])
@pytest.mark.parametrize("option,value", [("--workers", "-1"), ("--workers", "two"),
                                          ("--resize", "0"), ("--resize", "wide")])
def test_malformed_workers_and_resize_are_one_line_exit_2(tmp_path, command, option, value):
    argv = {"compress": ["compress", "m.onnx"], "validate": ["validate", "a", "b", "--data", "d"],
            "finetune": ["finetune", "p", "--teacher", "t", "--data", "d", "-o", "o"]}[command]
    result = CliRunner().invoke(main, [*argv, option, value])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and option in lines[0] and "Traceback" not in result.output
