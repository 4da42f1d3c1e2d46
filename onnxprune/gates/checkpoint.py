"""Resumable gate training: numpy-only checkpoints (no pickles), written atomically."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np

from onnxprune.errors import OnnxPruneError


class Checkpointer:
    """Saves and loads the training state of one run, keyed by its settings."""

    def __init__(self, path: Path, settings_key: str):
        self.path = Path(path)
        self.key = settings_key

    def save(self, state: dict) -> None:
        arrays = {k: np.asarray(v) for k, v in state.items()}
        arrays["settings"] = np.array(self.key)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.resolve().parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(buffer.getvalue())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load(self) -> dict | None:
        if not self.path.is_file():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as data:
                state = {k: data[k] for k in data.files}
        except Exception:
            raise OnnxPruneError(f"{self.path}: not a readable onnxprune checkpoint") from None
        if str(state.pop("settings", "")) != self.key:
            raise OnnxPruneError(f"{self.path}: checkpoint was made with other settings; "
                                 f"delete it or run with the same options")
        return state
