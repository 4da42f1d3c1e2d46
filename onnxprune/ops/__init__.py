"""The registry of per-op channel rules, one op family per module.

A rule is ``rule(ctx, node)``: it reads the tracked channel axes of the node's inputs from
``ctx`` (an ``onnxprune.analysis.channels.Context``), sets those of its outputs, and records
members, reads, fixups and barriers. An op without a rule is a barrier.
"""

from __future__ import annotations

from collections.abc import Callable

RULES: dict[str, Callable] = {}


def register(*op_types: str):
    """Register a rule for ``op_types``; registering an op twice raises."""

    def decorate(rule):
        for op in op_types:
            if op in RULES:
                raise ValueError(f"a channel rule for '{op}' is already registered")
            RULES[op] = rule
        return rule

    return decorate


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
