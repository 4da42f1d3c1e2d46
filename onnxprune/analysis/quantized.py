"""Quantized ops: named barriers (no channel rule, no torch kernel), reported with a reason."""

from __future__ import annotations

_PRUNE_FLOAT = "quantized graphs are not pruned: prune the float model, then quantize it"

# op type -> why it blocks; ``run_rules`` lists each such node as a barrier even where no
# tracked channel reaches it, so that a quantized model says why nothing is prunable
QUANTIZED_BARRIERS: dict[str, str] = {
    "QuantizeLinear": f"quantize (QDQ) node: {_PRUNE_FLOAT}",
    "DequantizeLinear": f"dequantize (QDQ) node: {_PRUNE_FLOAT}",
    "DynamicQuantizeLinear": f"dynamic quantization: {_PRUNE_FLOAT}",
    "ConvInteger": f"integer convolution: {_PRUNE_FLOAT}",
    "QLinearConv": f"quantized convolution: {_PRUNE_FLOAT}",
    "MatMulInteger": f"integer matmul: {_PRUNE_FLOAT}",
    "QLinearMatMul": f"quantized matmul: {_PRUNE_FLOAT}",
    "QLinearAdd": f"quantized add: {_PRUNE_FLOAT}",
    "QLinearMul": f"quantized mul: {_PRUNE_FLOAT}",
}
