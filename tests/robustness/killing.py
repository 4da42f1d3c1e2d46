"""Kill an ``onnxprune`` subprocess at a chosen point and check that no partial output remains.

Reusable for any command that writes into an output folder (``prune`` today, ``compress
--resume`` later)::

    result = run_and_kill(["prune", model, "--plan", plan, "-o", out / "m.onnx"], out,
                          signal.SIGINT, when=after_seconds(0.3))
    assert_no_partial_outputs(out, result)

``when`` decides the moment: ``after_seconds(t)`` or ``when_path_appears(folder, pattern)``
(e.g. the temporary ``.onnxprune-tmp-*`` folder, to kill in the middle of a save).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from onnxprune.graph import TEMP_PREFIX

Trigger = Callable[[subprocess.Popen, float], bool]  # (process, seconds since start) -> kill now?


@dataclass
class KillResult:
    signal: int
    killed: bool  # False when the process ended before the trigger fired
    returncode: int
    pid: int
    stdout: str
    stderr: str
    before: set[str]  # names in the output folder before the run


def after_seconds(seconds: float) -> Trigger:
    return lambda proc, elapsed: elapsed >= seconds


def when_path_appears(folder: Path, pattern: str, timeout: float = 60.0) -> Trigger:
    """Fire as soon as something matching ``pattern`` exists in ``folder`` (or after ``timeout``)."""
    folder = Path(folder)
    return lambda proc, elapsed: elapsed >= timeout or any(folder.glob(pattern))


def _default_sigint() -> None:
    """A test run started in the background (``cmd &`` in a script) inherits SIGINT ignored;
    the child gets the default disposition back, as a user's Ctrl-C would find it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_and_kill(args: Sequence[str | os.PathLike], out_dir: Path, sig: int, when: Trigger,
                 timeout: float = 120.0, cwd: Path | None = None) -> KillResult:
    """Start ``python -m onnxprune *args``, send ``sig`` when ``when`` fires, wait for the end."""
    out_dir = Path(out_dir)
    before = {p.name for p in out_dir.iterdir()} if out_dir.exists() else set()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "onnxprune", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=cwd, preexec_fn=_default_sigint)
    start = time.monotonic()
    killed = False
    while proc.poll() is None:
        elapsed = time.monotonic() - start
        if when(proc, elapsed):
            proc.send_signal(sig)
            killed = True
            break
        if elapsed > timeout:
            break
        time.sleep(0.001)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        raise AssertionError(f"onnxprune {' '.join(map(str, args))} did not end after {sig}")
    return KillResult(sig, killed, proc.returncode, proc.pid, stdout, stderr, before)


def leftovers(out_dir: Path, result: KillResult) -> list[str]:
    """Names in ``out_dir`` that the killed run created."""
    return sorted(p.name for p in Path(out_dir).iterdir() if p.name not in result.before)


def assert_no_partial_outputs(out_dir: Path, result: KillResult,
                              finished_outputs: Sequence[str] = (),
                              resumable: Sequence[str] = ()) -> None:
    """Nothing half-written in ``out_dir``.

    A run that finished before the signal may leave its complete ``finished_outputs``. After
    SIGINT (or SIGTERM) the process cleans up: exit 130 (143), no traceback, nothing new. SIGKILL
    cannot be handled: the final names must still be absent (outputs appear only by an atomic
    rename) and the only thing allowed is the killed process's own temporary entry
    (``.onnxprune-tmp-<pid>-*``), which the next onnxprune run in that folder removes.
    ``resumable`` names complete files kept on purpose (a training checkpoint for --resume).
    """
    new = [n for n in leftovers(out_dir, result) if n not in resumable]
    if not result.killed or result.returncode == 0:
        assert set(new) <= set(finished_outputs), new
        return
    assert "Traceback" not in result.stderr, result.stderr
    # a signal that lands after the final atomic rename (the run was done, the process was only
    # exiting) leaves complete outputs; what must never be there is a half-written one
    done = bool(new) and set(new) <= set(finished_outputs)
    if result.signal in (signal.SIGINT, signal.SIGTERM):
        expected = 130 if result.signal == signal.SIGINT else 143
        allowed = (expected, -result.signal) if done else (expected,)
        assert result.returncode in allowed, (result.returncode, result.stderr)
        assert set(new) <= set(finished_outputs), new
    else:
        assert result.returncode == -result.signal, result.returncode
        own = f"{TEMP_PREFIX}{result.pid}-"
        assert done or all(name.startswith(own) for name in new), new
