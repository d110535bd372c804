"""A headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe).

The protocol's JSON messages, each ended by a NUL byte, go in on the browser's fd 3 and come
out on its fd 4, so no websocket client (and no new dependency) is needed: a few dozen lines
here instead of a browser-automation package.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    """The path of a Chromium binary on PATH (or Debian's /usr/bin/chromium), or None."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


class Browser:
    """One headless Chromium process; `load(url)` opens a page in a new tab and answers what it
    asked for (see PageResult)."""

    def __init__(self, binary: str, profile: Path):
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def onto_fds_3_and_4() -> None:  # above 10 first, so neither dup2 can overwrite the other
            reading = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD, 10)
            writing = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD, 10)
            os.dup2(reading, 3)
            os.dup2(writing, 4)

        arguments = [binary, "--headless", "--remote-debugging-pipe", "--disable-gpu", "--no-first-run"]
        arguments += ["--no-default-browser-check", "--mute-audio", f"--user-data-dir={profile}"]
        if os.geteuid() == 0:
            arguments.append("--no-sandbox")  # Chromium refuses to run its sandbox as root
        self.process = subprocess.Popen(
            arguments + ["about:blank"],
            pass_fds=(3, 4),
            preexec_fn=onto_fds_3_and_4,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._next_id = 0
        self._messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        while True:
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                self._messages.put(None)
                return
            buffer += chunk
            *complete, buffer = buffer.split(b"\0")
            for message in complete:
                self._messages.put(json.loads(message))

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None, timeout=30.0):
        """Send one command and wait for its answer (events that come first are kept in `events`)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._messages.get(timeout=max(0.01, deadline - time.monotonic()))
            if answer is None:
                raise RuntimeError("Chromium closed its DevTools pipe")
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for(self, method: str, session: str, timeout: float = 30.0) -> dict[str, Any]:
        """The first event `method` of `session` (from those kept, else as it comes)."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method and event.get("sessionId") == session:
                    return event
            answer = self._messages.get(timeout=max(0.01, deadline - time.monotonic()))
            if answer is None:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self.events.append(answer)

    def load(self, url: str, expression: str, timeout: float = 60.0) -> tuple[Any, list[str]]:
        """Open `url` in a new tab, wait for its load event, evaluate `expression` (a promise
        is awaited) and return (its value, the URL of every request the tab made)."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Network.enable", session=session)
        self.call("Page.enable", session=session)
        self.call("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired", session, timeout)
        value = self.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session=session,
            timeout=timeout,
        )
        if "exceptionDetails" in value:
            raise RuntimeError(f"the page's check failed: {value['exceptionDetails']}")
        requests = [
            event["params"]["request"]["url"]
            for event in self.events
            if event.get("method") == "Network.requestWillBeSent" and event.get("sessionId") == session
        ]
        self.call("Target.closeTarget", {"targetId": target})
        return value["result"].get("value"), requests

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (RuntimeError, queue.Empty, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
