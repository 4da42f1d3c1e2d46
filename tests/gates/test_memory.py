"""--memory-budget sizes and the default budget (no torch needed)."""

from __future__ import annotations

import pytest

from onnxprune.errors import OnnxPruneError
from onnxprune.gates import memory
from onnxprune.gates.memory import (default_memory_budget, format_size, parse_size,
                                    resolve_budget)


@pytest.mark.parametrize("text,want", [
    ("2G", 2 << 30), ("512M", 512 << 20), ("512m", 512 << 20), ("1.5GiB", 3 << 29),
    ("300k", 300 << 10), ("300KB", 300 << 10), ("1000000", 1000000), (" 1 T ", 1 << 40),
    ("0", 0), (4096, 4096), (".5G", 1 << 29)])
def test_sizes_with_a_suffix_are_powers_of_1024(text, want):
    assert parse_size(text) == want


@pytest.mark.parametrize("text", ["", "G", "two", "-1G", "1.2.3M", "5 P", "1e9", -5, "1GG"])
def test_a_bad_size_is_one_line_exit_2(text):
    with pytest.raises(OnnxPruneError) as err:
        parse_size(text)
    assert err.value.exit_code == 2 and "\n" not in str(err.value)
    assert "--memory-budget" in str(err.value)


def test_the_default_is_an_eighth_of_the_memory_at_most_1_gib(monkeypatch):
    monkeypatch.setattr(memory, "physical_memory", lambda: 4 << 30)
    assert default_memory_budget() == 512 << 20
    monkeypatch.setattr(memory, "physical_memory", lambda: 64 << 30)
    assert default_memory_budget() == 1 << 30
    monkeypatch.setattr(memory, "physical_memory", lambda: None)
    assert default_memory_budget() == 1 << 30
    assert resolve_budget(None) == 1 << 30 and resolve_budget("3M") == 3 << 20


def test_this_machine_has_a_readable_memory_size():
    size = memory.physical_memory()
    assert size is not None and size > 1 << 27
    assert 0 < default_memory_budget() <= min(1 << 30, size // 8)


def test_format_size():
    assert format_size(1 << 30) == "1.0 GiB" and format_size(3 << 19) == "1.5 MiB"
    assert format_size(12) == "12 B"
