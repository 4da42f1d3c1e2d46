"""ONNX Runtime sessions: provider selection (cuda | cpu | auto), checked fallback, batched runs.

onnxruntime is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from onnxprune.errors import OnnxPruneError
from onnxprune.graph import MAX_PROTO_BYTES, load_model

PROVIDER_CHOICES = ("auto", "cuda", "cpu")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
ORT_DEFAULT_LOG_SEVERITY = 2  # warning: onnxruntime's own default

ModelLike = str | os.PathLike | onnx.ModelProto


@dataclass(frozen=True)
class RuntimeSession:
    """An ``InferenceSession`` and the provider it really runs on."""

    session: object  # onnxruntime.InferenceSession
    provider: str  # the provider actually used: session.get_providers()[0]
    providers: tuple[str, ...]
    requested: str  # "auto" | "cuda" | "cpu"
    name: str

    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]


def model_proto(model: ModelLike) -> tuple[onnx.ModelProto, str, Path | None]:
    """(ModelProto, display name, path or None) for a path or a ModelProto."""
    if isinstance(model, onnx.ModelProto):
        return model, model.graph.name or "<model>", None
    loaded = load_model(model)
    return loaded.model, str(model), loaded.path


def _dims(value: onnx.ValueInfoProto) -> list[int | str | None]:
    shape = value.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape.dim]


def model_input_shape(model: onnx.ModelProto) -> list[int | str | None] | None:
    """The first real input's shape (ints, symbolic names or None), or None when unknown."""
    inits = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name not in inits:
            if value.type.tensor_type.HasField("shape"):
                return _dims(value)
            return None
    return None


def model_input_names(model: onnx.ModelProto) -> list[str]:
    """The names of the real inputs (graph inputs that are not initializers)."""
    inits = {t.name for t in model.graph.initializer}
    return [v.name for v in model.graph.input if v.name not in inits]


def model_num_classes(model: onnx.ModelProto) -> int | None:
    """K when the first output is declared ``[N, K]`` with a static K > 1, else None."""
    if not model.graph.output or not model.graph.output[0].type.tensor_type.HasField("shape"):
        return None
    dims = _dims(model.graph.output[0])
    if len(dims) == 2 and isinstance(dims[1], int) and dims[1] > 1:
        return dims[1]
    return None


def ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def available_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def create_session(
    model: ModelLike,
    provider: str = "auto",
    threads: int | None = None,
    name: str | None = None,
    memory_arena: bool = True,
) -> RuntimeSession:
    """A session on ``provider``; "cuda" that is missing or falls back to the CPU is an error.
    ``memory_arena=False`` turns ONNX Runtime's CPU arena and memory patterns off: a run then
    holds only its live tensors (for large inputs where speed matters less than the peak)."""
    if provider not in PROVIDER_CHOICES:
        raise OnnxPruneError(f"unknown provider '{provider}' (choose from {', '.join(PROVIDER_CHOICES)})")
    if threads is not None and threads < 1:
        raise OnnxPruneError(f"threads must be at least 1, got {threads}")
    proto, label, path = model_proto(model)
    source = _session_source(proto, path, label)
    name = name or label
    if provider == "cpu":
        return _make(source, [CPU], threads, provider, name, memory_arena)
    has_cuda = CUDA in available_providers()
    if provider == "cuda" and not has_cuda:
        raise OnnxPruneError(
            f"--provider cuda: this onnxruntime build has no {CUDA} "
            f"(available: {', '.join(available_providers())}); install onnxruntime-gpu or use --provider cpu"
        )
    if not has_cuda:
        return _make(source, [CPU], threads, provider, name, memory_arena)
    hint = _preload_cuda_libraries()
    try:
        with _quiet_ort_logging():
            session = _make(source, [CUDA, CPU], threads, provider, name, memory_arena)
    except OnnxPruneError:
        if provider == "cuda":
            raise
        return _make(source, [CPU], threads, provider, name, memory_arena)
    if session.provider != CUDA and provider == "cuda":
        raise OnnxPruneError(
            f"--provider cuda: {CUDA} could not be created ({hint}no usable GPU, or CUDA/cuDNN "
            f"libraries missing), so the session fell back to {session.provider}; "
            f"use --provider cpu or --provider auto"
        )
    return session


def _session_source(proto: onnx.ModelProto, path: Path | None, label: str):
    """Serialized bytes, or the (already safety-checked) path when the model is over 2 GB."""
    if proto.ByteSize() <= MAX_PROTO_BYTES:
        return proto.SerializeToString()
    if path is None:
        raise OnnxPruneError(f"{label}: model over 2 GB; save it with external data and pass its path")
    return str(path)


def _make(source, providers: list[str], threads, requested: str, name: str,
          memory_arena: bool = True) -> RuntimeSession:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: we check and report the provider ourselves
    if not memory_arena:
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    try:
        session = onnxruntime.InferenceSession(source, options, providers=providers)
    except Exception as exc:
        raise OnnxPruneError(f"{name}: onnxruntime cannot load the model ({_short(exc)})") from None
    used = tuple(session.get_providers())
    return RuntimeSession(session, used[0] if used else CPU, used, requested, name)


@functools.cache
def _preload_cuda_libraries() -> str:
    """Preload CUDA/cuDNN from pip packages once per process; a hint when some failed."""
    import onnxruntime

    preload = getattr(onnxruntime, "preload_dlls", None)
    if preload is None:
        return ""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):  # preload_dlls prints its failures
            preload()
    except Exception:
        return "CUDA libraries could not be preloaded; "
    text = captured.getvalue()
    if "Failed to load" in text:
        first = next(line for line in text.splitlines() if "Failed to load" in line)
        return f"{first.split(':')[0].replace('Failed to load ', 'cannot load ').strip()}; "
    return ""


@contextlib.contextmanager
def _quiet_ort_logging():
    """Silence ORT's process-wide logger while a CUDA provider is tried (we report fallback)."""
    import onnxruntime

    onnxruntime.set_default_logger_severity(4)
    try:
        yield
    finally:
        onnxruntime.set_default_logger_severity(ORT_DEFAULT_LOG_SEVERITY)


_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def numpy_dtype(ort_type: str):
    """numpy dtype of an ORT type string such as ``tensor(float)``."""
    if ort_type not in _ORT_TYPES:
        raise OnnxPruneError(f"unsupported input type {ort_type}")
    return _ORT_TYPES[ort_type]


def static_batch(dims) -> int | None:
    """The static leading dim of an ORT shape list, or None when dynamic."""
    if dims and isinstance(dims[0], int) and dims[0] > 0:
        return int(dims[0])
    return None


def run_batches(rs: RuntimeSession, x: np.ndarray, batch_size: int = 32) -> list[np.ndarray]:
    """Run a one-input session over ``x`` in batches; outputs concatenated along axis 0.

    A model with a static batch size gets batches of exactly that size (the last one padded
    with copies of its final sample, the padding dropped from the outputs).
    """
    inputs = rs.session.get_inputs()
    if len(inputs) != 1:
        raise OnnxPruneError(f"{rs.name}: has {len(inputs)} inputs; data-driven runs need exactly one")
    if batch_size < 1:
        raise OnnxPruneError(f"batch size must be at least 1, got {batch_size}")
    dtype = numpy_dtype(inputs[0].type)
    fixed = static_batch(inputs[0].shape)
    step = fixed or batch_size
    chunks: list[list[np.ndarray]] = []
    for start in range(0, len(x), step):
        part = x[start:start + step].astype(dtype, copy=False)
        real = len(part)
        if fixed and real < fixed:
            part = np.concatenate([part, np.repeat(part[-1:], fixed - real, axis=0)])
        try:
            outs = rs.session.run(None, {inputs[0].name: part})
        except Exception as exc:
            raise OnnxPruneError(f"{rs.name}: inference failed ({_short(exc)})") from None
        outs = [np.reshape(o, (1,)) if o.ndim == 0 else o for o in outs]  # scalars: one per batch
        chunks.append([o[:real] if fixed and o.shape[0] == fixed else o for o in outs])
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def _short(exc: BaseException) -> str:
    return (" ".join(str(exc).split()) or type(exc).__name__)[:300]
