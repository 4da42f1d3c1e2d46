"""The registry of per-op channel rules, one op family per module.

A rule is ``rule(ctx, node)``: it reads the tracked channel axes of the node's inputs from
``ctx`` (an ``onnxprune.analysis.channels.Context``), sets those of its outputs, and records
members, reads, fixups and barriers. An op without a rule is a barrier.
"""

from __future__ import annotations

from collections.abc import Callable

from onnxprune.registry import registrar

RULES: dict[str, Callable] = {}


register = registrar(RULES, "a channel rule")  # register(*op_types)(rule)


from onnxprune.ops import (  # noqa: E402,F401  (each module registers its rules)
    concat_split,
    conv,
    elementwise,
    gemm,
    normalization,
    pooling,
    reshape,
    resize_pad,
    shape_ops,
)
