"""ONNX Runtime layer: sessions with checked providers, validation of a pruned model, benchmarks.

onnxruntime itself is imported only inside the functions that run it.
"""

from onnxprune.runtime.bench import bench_models, format_bench
from onnxprune.runtime.session import RuntimeSession, create_session, run_batches
from onnxprune.runtime.validate import format_validation, validate_models

__all__ = [
    "RuntimeSession",
    "bench_models",
    "create_session",
    "format_bench",
    "format_validation",
    "run_batches",
    "validate_models",
]
