"""Training batches through torch.utils.data: the same batches (and the same trained gates) for any
number of DataLoader workers, decode errors in a worker as one-line errors, and a per-sample
loader equal to torch's TensorDataset feed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from onnxprune.analysis.groups import analyze_channels
from onnxprune.data import load_dataset
from onnxprune.errors import OnnxPruneError
from onnxprune.gates.autobot import GateConfig, train_gates
from onnxprune.gates.loader import Batches, batch_loader, epoch_order, sample_loader
from archs import conv_classifier


def _folder(root, count=24, size=6):
    rng = np.random.default_rng(5)
    for i in range(count):
        folder = root / str(i % 3)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
            folder / f"{i:02d}.png")
    return root


def _batches(data, workers, start=0, stop=7):
    order = epoch_order(len(data.x), 5, stop, seed=3)
    return [tuple(t.numpy() for t in b) for b in
            batch_loader(data.x, data.y, Batches(order, 5, start, stop), workers=workers)]


def test_two_workers_give_the_same_batches_as_none(tmp_path):
    data = load_dataset(_folder(tmp_path / "imgs"), input_shape=["N", 3, 6, 6])
    serial, parallel = _batches(data, 0), _batches(data, 2)
    assert len(serial) == len(parallel) == 7
    order = epoch_order(len(data.x), 5, 7, seed=3)
    for k, ((xs, ys), (xp, yp)) in enumerate(zip(serial, parallel)):
        np.testing.assert_array_equal(xs, xp)
        np.testing.assert_array_equal(ys, yp)
        np.testing.assert_array_equal(xs, data.x[order[5 * k:5 * k + 5]])  # the seeded order
    resumed = _batches(data, 2, start=4)  # a resumed run picks up at the same batch
    np.testing.assert_array_equal(resumed[0][0], serial[4][0])


def _model():
    return conv_classifier(seed=3, hw=6, widths=(6, 5), classes=3)


def test_gate_training_is_the_same_with_two_workers(tmp_path):
    data = load_dataset(_folder(tmp_path / "imgs"), input_shape=["N", 3, 6, 6])
    model = _model()
    analysis = analyze_channels(model)
    config = GateConfig(iterations=6, batch_size=8, seed=1)
    serial = train_gates(model, analysis, data.x, data.y, 0.5, config, workers=0)
    parallel = train_gates(model, analysis, data.x, data.y, 0.5, config, workers=2)
    np.testing.assert_array_equal(serial.gates, parallel.gates)
    assert [h["loss"] for h in serial.history] == [h["loss"] for h in parallel.history]
    eager = train_gates(model, analysis, np.asarray(data.x), data.y, 0.5, config)
    np.testing.assert_array_equal(serial.gates, eager.gates)  # lazy == a decoded array


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_image_in_a_worker_is_a_one_line_error(tmp_path, workers):
    root = _folder(tmp_path / "imgs", count=9)
    broken = root / "1" / "04.png"
    broken.write_bytes(b"not an image at all")
    data = load_dataset(root, input_shape=["N", 3, 6, 6])
    loader = batch_loader(data.x, data.y, Batches(np.arange(9), 3, 0, 3), workers=workers)
    with pytest.raises(OnnxPruneError) as info:
        list(loader)
    assert str(broken) in info.value.message and "\n" not in info.value.message
    samples = sample_loader(data.x, data.y, 3, range(9), workers=workers)
    with pytest.raises(OnnxPruneError, match="04.png"):
        list(samples)


def test_the_sample_loader_equals_a_tensor_dataset_feed(tmp_path):
    data = load_dataset(_folder(tmp_path / "imgs"), input_shape=["N", 3, 6, 6])
    x, y = np.asarray(data.x), data.y
    sampler = DistributedSampler(range(len(y)), num_replicas=2, rank=1, shuffle=True, seed=4,
                                 drop_last=True)
    reference = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                           batch_size=4, sampler=sampler, drop_last=True)
    ours = sample_loader(data.x, data.y, 4, sampler, workers=2)
    pairs = list(zip(reference, ours))
    assert len(pairs) == len(reference) == 3
    for (xr, yr), (xo, yo) in pairs:
        assert torch.equal(xr, xo) and torch.equal(yr, yo) and yo.dtype == torch.int64
