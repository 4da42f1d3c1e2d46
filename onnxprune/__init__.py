"""onnxprune: structured pruning of ONNX models with AutoBot-style trainable bottlenecks.

Importing this package is cheap: torch and onnxruntime are imported only by the functions that
need them.
"""

__version__ = "0.1.0"

_API = ("analyze", "prune", "compress", "validate", "bench", "CompressConfig", "Preprocessing")


def __getattr__(name):
    if name in _API:
        from onnxprune import api

        return getattr(api, name)
    raise AttributeError(f"module 'onnxprune' has no attribute {name!r}")


__all__ = [*_API, "__version__"]
