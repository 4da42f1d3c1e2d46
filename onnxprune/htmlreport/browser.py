"""Open an HTML file in headless Chromium and record what a reader's browser would do with it:
console messages, uncaught errors, every request, the rendered DOM and a PNG screenshot.

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe`` (file
descriptors 3 and 4, NUL-separated JSON), so only the standard library is needed. Used by the
report's browser test and ``tools/report_screenshot.py``; the report itself never needs it.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from onnxprune.errors import OnnxPruneError

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-default-apps", "--mute-audio",
         "--hide-scrollbars", "--remote-debugging-pipe")


def find_chromium() -> str | None:
    """The first Chromium or Chrome binary on PATH, or None."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageResult:
    """What happened while the page loaded."""

    console: list[dict] = field(default_factory=list)  # {level, text} of console and log entries
    exceptions: list[str] = field(default_factory=list)  # uncaught errors
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    failed: list[str] = field(default_factory=list)  # requests that failed or were blocked
    dom: str = ""  # document.documentElement.outerHTML after load
    png: bytes = b""

    def errors(self) -> list[str]:
        """Console errors, log errors and uncaught exceptions."""
        return [*(f"{c['level']}: {c['text']}" for c in self.console
                  if c["level"] in ("error", "assert")), *self.exceptions]

    def external_requests(self) -> list[str]:
        """Requests for anything but the page itself and inline data."""
        return [u for u in self.requests if not u.startswith(("file:", "data:", "about:"))]


class _Pipe:
    """The DevTools protocol over Chromium's pipe: ``call`` waits for its reply, collecting the
    events that arrive meanwhile."""

    def __init__(self, write_fd: int, read_fd: int, deadline: float):
        self.write_fd, self.read_fd, self.deadline = write_fd, read_fd, deadline
        self.buffer, self.events, self.next_id = b"", [], 0

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        return self.next_id

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        ident = self.send(method, params, session)
        while True:
            message = self.receive()
            if message.get("id") == ident:
                if "error" in message:
                    raise OnnxPruneError(f"chromium: {method} failed: {message['error']}")
                return message.get("result", {})

    def receive(self, timeout: float | None = None) -> dict:
        """The next message (events are also kept in ``events``); {} after ``timeout`` s."""
        stop = self.deadline if timeout is None else min(self.deadline, time.monotonic() + timeout)
        while b"\0" not in self.buffer:
            left = stop - time.monotonic()
            if left <= 0:
                if timeout is not None and time.monotonic() < self.deadline:
                    return {}
                raise OnnxPruneError("chromium did not answer in time")
            ready, _, _ = select.select([self.read_fd], [], [], left)
            if ready:
                chunk = os.read(self.read_fd, 1 << 20)
                if not chunk:
                    raise OnnxPruneError("chromium closed the DevTools pipe")
                self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        message = json.loads(raw)
        if "method" in message:
            self.events.append(message)
        return message

    def wait_for(self, method: str) -> None:
        while not any(e["method"] == method for e in self.events):
            self.receive()


def open_page(path: str | os.PathLike, width: int = 1280, height: int = 900,
              full_page: bool = False, timeout: float = 60.0,
              chromium: str | None = None) -> PageResult:
    """Load ``path`` in headless Chromium at ``width``×``height`` CSS pixels and return the
    console, errors, requests, DOM and a PNG screenshot (the viewport, or the whole page)."""
    binary = chromium or find_chromium()
    if binary is None:
        raise OnnxPruneError("no chromium binary on PATH (apt-get install chromium)")
    url = Path(path).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="onnxprune-chromium-") as profile:
        to_chrome, chrome_in = os.pipe()
        chrome_out, from_chrome = os.pipe()
        # copies numbered 10 and up, so that moving them onto 3 and 4 cannot clobber each other
        low = (to_chrome, from_chrome)
        to_chrome, from_chrome = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in low)
        for fd in low:
            os.close(fd)
        command = [binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                   "about:blank"]
        # Chromium reads commands on fd 3 and writes replies on fd 4.
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, close_fds=True, pass_fds=(3, 4),
            preexec_fn=lambda: (os.dup2(to_chrome, 3), os.dup2(from_chrome, 4)))
        os.close(to_chrome)
        os.close(from_chrome)
        pipe = _Pipe(chrome_in, chrome_out, time.monotonic() + timeout)
        try:
            return _drive(pipe, url, width, height, full_page)
        finally:
            _close(pipe, process, chrome_in, chrome_out)


def _drive(pipe: _Pipe, url: str, width: int, height: int, full_page: bool) -> PageResult:
    target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        pipe.call(f"{domain}.enable", {}, session)
    pipe.call("Emulation.setDeviceMetricsOverride",
              {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session)
    pipe.events.clear()
    pipe.call("Page.navigate", {"url": url}, session)
    pipe.wait_for("Page.loadEventFired")
    while pipe.receive(timeout=0.5):  # let late console messages arrive
        pass
    dom = pipe.call("Runtime.evaluate", {"expression": "document.documentElement.outerHTML",
                                         "returnByValue": True}, session)["result"]["value"]
    shot = {"format": "png", "captureBeyondViewport": full_page}
    if full_page:
        size = pipe.call("Page.getLayoutMetrics", {}, session)["cssContentSize"]
        shot["clip"] = {"x": 0, "y": 0, "width": width, "height": size["height"], "scale": 1}
    png = base64.b64decode(pipe.call("Page.captureScreenshot", shot, session)["data"])
    result = _collect(pipe.events)
    result.dom, result.png = dom, png
    return result


def _collect(events: list[dict]) -> PageResult:
    result = PageResult()
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            result.console.append({"level": params["type"], "text": text})
        elif method == "Log.entryAdded":
            entry = params["entry"]
            result.console.append({"level": entry["level"], "text": entry.get("text", "")})
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            result.exceptions.append(details.get("exception", {}).get("description")
                                     or details.get("text", "exception"))
        elif method == "Network.requestWillBeSent":
            result.requests.append(params["request"]["url"])
        elif method == "Network.loadingFailed":
            result.failed.append(params.get("errorText", "failed"))
    return result


def _close(pipe: _Pipe, process: subprocess.Popen, *fds: int) -> None:
    try:
        pipe.deadline = time.monotonic() + 5
        pipe.send("Browser.close")
        process.wait(timeout=10)
    except (OSError, OnnxPruneError, subprocess.TimeoutExpired):
        process.kill()
        process.wait()
    finally:
        for fd in fds:
            os.close(fd)
