"""Tiny conv classifiers built with onnx.helper and their pruned/broken variants (test helpers)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CHANNELS = 6
CLASSES = 5
SIZE = 8
IR_VERSION = 10  # onnxruntime 1.31 reads IR <= 13; onnx 1.23's helper would write 14


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "conv_w": rng.standard_normal((CHANNELS, 3, 3, 3)).astype(np.float32),
        "conv_b": rng.standard_normal(CHANNELS).astype(np.float32),
        "fc_w": rng.standard_normal((CLASSES, CHANNELS)).astype(np.float32),
        "fc_b": rng.standard_normal(CLASSES).astype(np.float32),
    }


def conv_classifier(
    weights: dict[str, np.ndarray] | None = None,
    batch: int | str = "N",
    output_name: str = "logits",
    spatial: int | str = SIZE,
) -> onnx.ModelProto:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm; input x [batch, 3, S, S]."""
    w = weights or _weights()
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()]
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], [output_name], transB=1, name="fc"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, spatial, spatial])
    y = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch, w["fc_w"].shape[0]])
    graph = helper.make_graph(nodes, "tiny", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)


def pruned_weights(keep: list[int]) -> dict[str, np.ndarray]:
    """The conv's output channels sliced to ``keep`` (and the Gemm's input columns)."""
    w = _weights()
    return {"conv_w": w["conv_w"][keep], "conv_b": w["conv_b"][keep],
            "fc_w": w["fc_w"][:, keep], "fc_b": w["fc_b"]}


def negated_weights() -> dict[str, np.ndarray]:
    """Logits negated: argmax becomes argmin, so top-1 never agrees."""
    w = _weights()
    return {**w, "fc_w": -w["fc_w"], "fc_b": -w["fc_b"]}


def rank4_output_model() -> onnx.ModelProto:
    """Same names as ``conv_classifier`` but the output ``logits`` has rank 4."""
    w = _weights()
    fc = w["fc_w"].reshape(CLASSES, CHANNELS, 1, 1)
    inits = [numpy_helper.from_array(w["conv_w"], "conv_w"), numpy_helper.from_array(fc, "fc_w")]
    nodes = [
        helper.make_node("Conv", ["x", "conv_w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["p"]),
        helper.make_node("Conv", ["p", "fc_w"], ["logits"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES, 1, 1])
    graph = helper.make_graph(nodes, "rank4", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)


def reference_logits(x: np.ndarray, weights: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """The classifier's logits (ORT on the CPU), to label data with its own predictions."""
    import onnxruntime

    model = conv_classifier(weights)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def cuda_usable() -> bool:
    """True when a CUDA session really runs on the GPU here (then the no-GPU tests skip)."""
    from onnxprune.errors import OnnxPruneError
    from onnxprune.runtime.session import create_session

    try:
        create_session(conv_classifier(), provider="cuda")
    except OnnxPruneError:
        return False
    return True
