"""Every op that the channel analysis can follow also runs in the torch executor.

Otherwise ``analyze`` calls a model prunable and ``compress`` fails late, when it builds the
executor for gate training.
"""

from __future__ import annotations

from onnxprune.gates.torch_ops import OPS
from onnxprune.ops import RULES


def test_every_channel_rule_has_a_torch_kernel():
    missing = sorted(set(RULES) - set(OPS))
    assert missing == [], f"ops with a channel rule but no torch kernel: {missing}"
    assert set(RULES) <= set(OPS)
