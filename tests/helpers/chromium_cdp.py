"""A tiny Chrome DevTools Protocol client over ``--remote-debugging-pipe`` (stdlib only).

Why this route: Debian's ``chromium`` is the browser; Selenium needs a matching chromedriver
and Playwright downloads its own browser build, neither of which a fresh machine can fetch.
``--dump-dom`` / ``--screenshot`` cannot report console errors or whether each image decoded.
With ``--remote-debugging-pipe`` the browser reads CDP requests on fd 3 and writes replies and
events on fd 4, each a JSON message ending in a NUL byte: no websocket, no port, no package.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-pipe", "--window-size=1280,900")


def find_chromium() -> str | None:
    """The browser: ``$NAS_CHROMIUM``, else ``chromium`` / ``chromium-browser`` on the PATH."""
    return (os.environ.get("NAS_CHROMIUM") or shutil.which("chromium")
            or shutil.which("chromium-browser"))


class Browser:
    """Headless Chromium driven over the pipe; collects the page's errors while it loads."""

    def __init__(self, binary: str, timeout: float = 120.0) -> None:
        self.timeout, self._next, self._buffer = timeout, 0, b""
        self.events: list[dict[str, Any]] = []
        self._profile = tempfile.mkdtemp(prefix="nas-chromium-")
        to_child, self._out = os.pipe()
        self._in, from_child = os.pipe()

        def wire() -> None:  # in the child: our pipes become its fds 3 (requests) and 4 (replies)
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={self._profile}",
                                      "about:blank"],
                                     preexec_fn=wire, pass_fds=(3, 4), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child)
        os.close(from_child)

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None) -> dict:
        """Call ``method`` and return its result; events received meanwhile go to :attr:`events`."""
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._out, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, *, session: str | None = None, start: int = 0
                 ) -> dict[str, Any]:
        """The first event named ``method`` of ``session`` (any, if ``None``) among the events
        from index ``start`` on (already received or the next ones)."""
        deadline = time.monotonic() + self.timeout
        seen = start
        while True:
            for ev in self.events[seen:]:
                if ev.get("method") == method and session in (None, ev.get("sessionId")):
                    return ev
            seen = max(seen, len(self.events))
            self.events.append(self._read_message(deadline))

    def open(self, url: str) -> str:
        """A new tab showing ``url`` after its load event; returns its session id."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget",
                            {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        start = len(self.events)  # a load event of an earlier tab must not count for this one
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired", session=session, start=start)
        return session

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries (e.g. a missing file)."""
        out = []
        for ev in self.events:
            p = ev.get("params", {})
            if ev.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error",
                                                                                    "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description")))
                                                  for a in p["args"]))
            elif ev.get("method") == "Runtime.exceptionThrown":
                out.append("exception: " + p["exceptionDetails"].get("text", ""))
            elif ev.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}")
        return out

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._in, self._out):
            os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def screenshot(browser: Browser, session: str, path: Path) -> tuple[int, int]:
    """Full-page PNG screenshot written to ``path``; returns its pixel size."""
    shot = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                        session=session)
    data = base64.b64decode(shot["data"])
    path.write_bytes(data)
    return png_size(data)
