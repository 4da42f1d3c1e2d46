"""Progress of long steps on stderr through click's progress bar.

Shown when stderr is a terminal (or when asked with ``--progress``: then, off a terminal, as one
log line per tenth of the step, since click draws no bar there), never with ``--quiet``. Each
step is one ``Steps.phase(label, total)`` context giving an ``update(done, text, total=None)``
callable; a step whose total is known only later passes it with its first update.
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
    def phase(self, label: str, total: int | None = None) -> Iterator[Callable]:
        """``update(done, text="", total=None)`` moves the bar to ``done`` of the total."""
        if not self.enabled:
            yield lambda done, text="", total=None: None
            return
        bar = _Bar(label, total, self.terminal)
        try:
            yield bar.update
        finally:
            bar.close()


class _Bar:
    """One click progress bar (or log lines off a terminal), opened at the first known total."""

    def __init__(self, label: str, total: int | None, terminal: bool):
        self.label, self.total, self.terminal = label, total, terminal
        self.done, self.tenth, self.text, self.bar = 0, -1, "", None

    def update(self, done: int, text: str = "", total: int | None = None) -> None:
        self.total = total or self.total
        if not self.total:
            return
        done = max(0, min(int(done), self.total))
        self.text = text
        if not self.terminal:
            tenth = 10 * done // self.total
            if tenth > self.tenth:
                self.tenth = tenth
                print(f"{self.label}: {done}/{self.total} {text}".rstrip(), file=sys.stderr,
                      flush=True)
            return
        if self.bar is None:
            import click

            self.bar = click.progressbar(length=self.total, label=self.label, file=sys.stderr,
                                         show_eta=True, show_percent=False, show_pos=True,
                                         width=24, item_show_func=lambda _: self.text)
            self.bar.__enter__()
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
