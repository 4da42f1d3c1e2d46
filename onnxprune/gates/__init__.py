"""The only torch code of onnxprune: a differentiable executor of ONNX graphs and its gates."""
