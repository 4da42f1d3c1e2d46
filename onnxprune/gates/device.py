"""The torch device of every torch step (gate training, recalibration, data-free synthesis)."""

from __future__ import annotations

import re

import torch

from onnxprune.errors import OnnxPruneError

DEVICES = "auto|cpu|cuda|cuda:N"


def resolve_device(name: str | None) -> str:
    """``auto|cpu|cuda|cuda:N`` → a torch device string; auto takes CUDA when torch sees it.

    A request for CUDA that torch cannot serve (a CPU build, no GPU, no such index) is a
    user error: :class:`OnnxPruneError`, one line, exit code 2.
    """
    text = "auto" if name is None else str(name).strip().lower()
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return "cpu"
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise OnnxPruneError(f"--device must be one of {DEVICES}, got '{name}'")
    if not torch.cuda.is_available():
        why = ("this torch is a CPU-only build" if torch.version.cuda is None
               else "torch sees no CUDA device")
        raise OnnxPruneError(f"--device {text}: CUDA is not available ({why}, torch "
                             f"{torch.__version__}); use --device cpu or auto")
    count = torch.cuda.device_count()
    if match.group(1) is not None and int(match.group(1)) >= count:
        raise OnnxPruneError(f"--device {text}: there is no such CUDA device "
                             f"(torch sees {count})")
    return text


def device_budget(memory_budget: int | str | None, device: str) -> int:
    """The bytes ``--memory-budget`` gives the torch steps on ``device``: as given, else the
    default of ``gates/memory.py`` on the CPU and a quarter of the GPU's memory on CUDA (the
    cached activations live on the device; RSS is the host's)."""
    from onnxprune.gates.memory import resolve_budget

    if memory_budget is None and device.startswith("cuda"):
        return int(torch.cuda.get_device_properties(torch.device(device)).total_memory // 4)
    return resolve_budget(memory_budget)
