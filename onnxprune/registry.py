"""Op-type tables filled by decorators; registering an op type twice raises."""

from __future__ import annotations

from collections.abc import Callable


def registrar(table: dict[str, Callable], what: str):
    """A ``register(*op_types)`` decorator that fills ``table``."""

    def register(*op_types: str):
        def decorate(entry):
            for op in op_types:
                if op in table:
                    raise ValueError(f"{what} for '{op}' is already registered")
                table[op] = entry
            return entry

        return decorate

    return register
