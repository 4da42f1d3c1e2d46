"""The data of one ``compress`` run: training samples (gates and calibration), the evaluation set,
and what the report says about them. Nothing is decoded here: the samples are lazy views
(``onnxprune.lazydata``) and every subset (the held-out part, the training part) is an index
list into the same source.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace

import numpy as np
import onnx

from onnxprune.errors import OnnxPruneError
from onnxprune.lazydata import LazyArray
from onnxprune.progress import Steps


@dataclass(frozen=True)
class Inputs:
    """What each phase sees: training inputs (gates and calibration) and the evaluation set."""

    x: LazyArray  # array-like: len, shape, indexing decodes a float32 batch
    y: np.ndarray | None
    mode: str  # the task loss, for the report
    evaluation: object  # a Dataset
    about: dict  # the evaluation set's source, size and indices, for the report
    classes: tuple[str, ...] | None  # image folders: class names in label order


def prepare_inputs(config, model: onnx.ModelProto, device: str = "cpu") -> Inputs:
    """Open --data and --eval-data; without --eval-data hold out a seeded part of --data that
    neither gate training nor calibration sees; data-free: synthetic inputs, labelled so."""
    from onnxprune.data import Dataset, holdout_split, load_dataset, take
    from onnxprune.runtime.session import model_num_classes

    shape, classes = input_shape(model, config.input_shapes), model_num_classes(model)
    kwargs = dict(input_shape=shape, prep=config.preprocessing, num_classes=classes)
    train = load_dataset(config.data, fraction=config.fraction, limit=config.limit,
                         **kwargs) if config.data else None
    names = train.classes if train is not None else None
    evaluation = load_dataset(config.eval_data, class_names=names,
                              **kwargs) if config.eval_data else None
    about = {"source": "--eval-data", "path": config.eval_data}
    if train is None:
        x, mode = _synthetic_inputs(config, model, shape, device)
        if evaluation is None:
            train_idx, eval_idx = holdout_split(len(x), config.holdout, config.seed)
            evaluation, x = Dataset(x.subset(eval_idx)), x.subset(train_idx)
            about = {"source": "synthetic inputs (data-free): not a measure of accuracy"}
        about["synthetic"] = config.eval_data is None
        return Inputs(x, None, mode, evaluation, about, None)
    mode = "cross-entropy on labels" if train.y is not None else "distillation (no labels)"
    if evaluation is None:
        train_idx, eval_idx = holdout_split(len(train), config.holdout, config.seed)
        evaluation, train = take(train, eval_idx), take(train, train_idx)
        about = {"source": f"held-out part of --data ({config.holdout:g}, seed {config.seed})",
                 "path": config.data, "indices": eval_idx.tolist(),
                 "training_indices": train_idx.tolist()}
    return Inputs(train.x, train.y, mode, evaluation, about, train.classes)


def input_shape(model, input_shapes):
    """The first input's declared shape, its dynamic non-batch dims sized by --input-shape."""
    from onnxprune.inputshapes import resolve_names
    from onnxprune.runtime.session import model_input_names, model_input_shape

    shape = model_input_shape(model)
    if not input_shapes or shape is None:
        return shape
    given = resolve_names(input_shapes, model_input_names(model)).get(model_input_names(model)[0])
    if given is None or len(given) != len(shape):
        return shape
    return [d if (axis == 0 or isinstance(d, int)) else given[axis] for axis, d in enumerate(shape)]


def _synthetic_inputs(config, model, shape, device):
    """Data-free inputs: optimised towards the graph's BatchNormalization statistics, or, with
    none left (exporters fold them), Gaussian noise drawn per sample on access (not stored)."""
    from onnxprune.gates.synthetic import NOISE, SAMPLES, has_bn_statistics, synthesize
    from onnxprune.lazydata import LazyArray, NoiseSource, as_lazy

    if shape is None or any(not isinstance(d, int) for d in shape[1:]):
        raise OnnxPruneError("data-free mode needs a static input shape (besides the batch): "
                             "give --input-shape NAME:D0,D1,... or --data")
    if not config.quiet:
        print("onnxprune: warning: no --data given: running data-free on synthetic inputs; "
              "real data gives better accuracy", file=sys.stderr, flush=True)
    if not has_bn_statistics(model):
        noise = NoiseSource(SAMPLES, tuple(shape[1:]), config.seed, "synthetic inputs")
        return LazyArray(noise), f"data-free distillation ({NOISE}; drawn per sample)"
    with Steps(config.quiet, config.progress).phase("data-free synthesis") as update:
        x, how = synthesize(model, tuple(shape[1:]), seed=config.seed, device=device,
                            memory_budget=config.memory_budget,
                            progress=lambda done, total, label: update(done, label, total))
    return as_lazy(x, "synthetic inputs"), f"data-free distillation ({how})"


def with_data_shape(config, model: onnx.ModelProto):
    """Without --input-shape, a model whose input has dynamic non-batch dims is analysed at the
    sample shape of its .npz --data (read from the array header)."""
    from onnxprune.data import npz_sample_shape
    from onnxprune.runtime.session import model_input_names, model_input_shape

    shape = model_input_shape(model)
    if (config.input_shapes or not config.data or not str(config.data).endswith(".npz")
            or shape is None or len(model_input_names(model)) != 1
            or all(isinstance(d, int) for d in shape[1:])):
        return config
    sample = npz_sample_shape(config.data)
    if sample is None or len(sample) != len(shape) - 1:
        return config
    return replace(config, input_shapes={model_input_names(model)[0]: (1, *sample)})


def calibration_pick(count: int, samples: int, seed: int) -> np.ndarray:
    """The calibration samples: a seeded choice of ``samples`` of ``count``, sorted."""
    return np.sort(np.random.default_rng(seed).permutation(count)[:samples])


MIN_CALIBRATION = 32  # calibration samples kept however small the budget (the rest may spill)
SCORE_BATCH = 64  # the refit scores' forward batch, smaller where its activations would not fit


@dataclass(frozen=True)
class Calibration:
    """How many calibration samples the recalibration uses, the scoring forward's batch, and a
    note for the report when the memory budget cut either."""

    samples: int
    score_batch: int
    note: str | None = None


def calibration_within_budget(config, model: onnx.ModelProto, x, device: str = "cpu"):
    """The :class:`Calibration` of a run: ``--calibration-samples``, or fewer where the
    recalibration sweep's cached activations would not fit ``--memory-budget``, and the refit
    scores' batch (``SCORE_BATCH`` or fewer, so a forward's activations fit the budget's
    quarter that the cache leaves).

    The sweep keeps every activation of both graphs that a later step reads for every
    calibration sample (``gates/sweep.py``), so its cache grows with the calibration set and the
    input size: at 224×224 a ResNet-50 caches ~9 MiB per sample and graph. Past the budget it
    would spill to disk and re-read every tensor once per step, which is slower than the rest
    of ``compress`` together; so the set is cut to what fits (at least ``MIN_CALIBRATION``),
    the same seeded pick's first samples. Layer fits draw at most a few thousand rows per
    batch, so a few dozen 224×224 images still give each conv far more rows than inputs."""
    requested = int(config.calibration_samples)
    if len(x) == 0:
        return Calibration(requested, SCORE_BATCH)
    from onnxprune.gates.device import device_budget
    from onnxprune.gates.executor import TorchGraph
    from onnxprune.gates.memory import RECALIBRATION_CACHE, format_size
    from onnxprune.gates.sweep import activation_bytes

    from onnxprune.runtime.session import model_input_shape

    sample = np.asarray(x[np.array([0])], dtype=np.float32)[0]
    dims = model_input_shape(model) or [None]
    fixed = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else 1  # a fixed batch size
    try:
        one_graph = activation_bytes(TorchGraph(model).float(), sample, fixed)
    except OnnxPruneError:  # e.g. several inputs: nothing to size; the phases say why they fail
        return Calibration(requested, SCORE_BATCH)
    budget = device_budget(config.memory_budget, device)
    cache = int(budget * RECALIBRATION_CACHE)
    batch = int(max(1, min(SCORE_BATCH, (budget - cache) // max(one_graph, 1))))
    notes = [] if batch == SCORE_BATCH else [
        f"refit scores in batches of {batch}: a sample's activations take "
        f"{format_size(one_graph)}"]
    samples = requested
    # the original's activations bound the pruned graph's; the input is cached once
    per_sample = 2 * one_graph + sample.nbytes
    fits = cache // max(per_sample, 1)
    if config.recalibrate and requested > MIN_CALIBRATION and fits < min(requested, len(x)):
        samples = max(MIN_CALIBRATION, int(fits))
        notes.insert(0, f"calibration: {samples} of the {requested} requested samples: the "
                        f"recalibration caches {format_size(per_sample)} of activations per "
                        f"sample and the memory budget leaves {format_size(cache)} for them "
                        f"(raise --memory-budget to use more)")
    return Calibration(samples, batch, "; ".join(notes) or None)
