"""Both op tables refuse a second registration of an op type."""

from __future__ import annotations

import pytest

from onnxprune.registry import registrar


def test_registering_an_op_twice_raises():
    table: dict = {}
    register = registrar(table, "a rule")
    register("Relu", "Sigmoid")(len)
    with pytest.raises(ValueError, match="'Relu' is already registered"):
        register("Relu")(abs)
    assert table["Relu"] is len


def test_channel_rules_refuse_a_duplicate():
    from onnxprune.ops import RULES, register

    before = RULES["Conv"]
    with pytest.raises(ValueError, match="channel rule for 'Conv'"):
        register("Conv")(lambda ctx, node: None)
    assert RULES["Conv"] is before


def test_torch_kernels_refuse_a_duplicate():
    from onnxprune.gates.torch_ops import OPS, register

    before = OPS["Conv"]
    with pytest.raises(ValueError, match="torch kernel for 'Conv'"):
        register("Conv")(lambda spec: None)
    assert OPS["Conv"] is before
