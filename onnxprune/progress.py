"""Progress of long steps on stderr through click's progress bar.

Shown when stderr is a terminal (or when asked with ``--progress``: then, off a terminal, as one
log line per tenth of the step, since click draws no bar there), never with ``--quiet``; each step
is one ``Steps.phase(label, total)`` context giving an ``update(done, text)`` callable.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator


class Steps:
    """Progress bars for the phases of one command."""

    def __init__(self, quiet: bool = False, force: bool = False):
        self.terminal = sys.stderr.isatty()
        self.enabled = not quiet and (force or self.terminal)

    @contextlib.contextmanager
    def phase(self, label: str, total: int) -> Iterator[Callable[[int, str], None]]:
        """``update(done, text)`` moves the bar to ``done`` of ``total`` with ``text`` beside it."""
        if not self.enabled or total <= 0:
            yield lambda done, text="": None
            return
        if not self.terminal:
            yield _log_lines(label, total)
            return
        import click

        state = {"text": "", "done": 0}
        with click.progressbar(length=total, label=label, file=sys.stderr, show_eta=True,
                               show_percent=False, show_pos=True, width=24,
                               item_show_func=lambda _: state["text"]) as bar:
            def update(done: int, text: str = "") -> None:
                state["text"] = text
                step = max(0, min(done, total) - state["done"])
                state["done"] += step
                bar.update(step)

            yield update


def _log_lines(label: str, total: int) -> Callable[[int, str], None]:
    """One stderr line each time another tenth of ``total`` is done (and at the end)."""
    shown = {"tenth": -1}

    def update(done: int, text: str = "") -> None:
        tenth = min(10, 10 * min(done, total) // total)
        if tenth > shown["tenth"] and (tenth > 0 or done == 0):
            shown["tenth"] = tenth
            print(f"{label}: {min(done, total)}/{total} {text}".rstrip(), file=sys.stderr,
                  flush=True)

    return update
