"""Headless Chromium driven over the DevTools protocol, for tests that check rendered pages.

The browser is the system's (Debian package `chromium`, or Chrome), found by `find_chromium()`.
It is started with `--remote-debugging-pipe`: the protocol's JSON messages travel NUL-terminated
over two pipes (the browser reads fd 3 and writes fd 4), so no websocket client and no port are
needed. Every hostname but loopback resolves to nothing (`--host-resolver-rules`): a page that
asks for web fonts or scripts from the internet fails over to local fonts at once, the same way
on every machine, instead of waiting for a network that tests must not depend on.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """The browser to run: $CHROMIUM if set, else the first of NAMES on PATH."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if Path(env).is_file() else shutil.which(env)
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(Exception):
    """The browser exited, timed out or answered a protocol command with an error."""


class Browser:
    """One headless browser with one tab (`Browser(path).page(width, height)` then navigate and
    evaluate). Use as a context manager: the browser and its profile directory go at exit."""

    def __init__(self, executable: str, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._home = tempfile.TemporaryDirectory(prefix="chromium-")
        self._log = open(Path(self._home.name) / "stderr.log", "wb")  # a pipe could fill up and stall it
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        args = [
            executable,
            "--headless=new",
            "--no-sandbox",  # tests run as root in containers, where the sandbox cannot start
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--hide-scrollbars",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
            f"--user-data-dir={Path(self._home.name) / 'profile'}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        # bash (sh may refuse fds over 9) moves our pipe ends to the fds the browser expects, then
        # becomes the browser
        wrapper = f'exec "$@" 3<&{to_browser_r} 4>&{from_browser_w}'
        self._proc = subprocess.Popen(
            ["bash", "-c", wrapper, "bash", *args],
            pass_fds=(to_browser_r, from_browser_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buf = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        self._session: str | None = None

    def _stderr(self) -> str:
        return (Path(self._home.name) / "stderr.log").read_text(errors="replace")[-2000:]

    # -- protocol ------------------------------------------------------------------------------

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no answer from the browser in {self.timeout:.0f} s")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                self._proc.wait(timeout=5)
                raise BrowserError(f"the browser exited ({self._proc.returncode}): {self._stderr()}")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def send(self, method: str, session: bool = True, **params: Any) -> dict[str, Any]:
        """Send a command (to the tab's session unless session=False) and return its result;
        events that arrive meanwhile are kept for `wait_event`."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session and self._session is not None:
            msg["sessionId"] = self._session
        try:
            os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        except BrokenPipeError:
            raise BrowserError(
                f"the browser exited ({self._proc.wait(timeout=5)}): {self._stderr()}"
            ) from None
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            if "method" in reply:
                self._events.append(reply)

    def wait_event(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            for i, event in enumerate(self._events):
                if event["method"] == method and event.get("sessionId") == self._session:
                    del self._events[i]
                    return event
            self._events.append(self._read_message(deadline))

    # -- the tab -------------------------------------------------------------------------------

    def page(self, width: int, height: int) -> Browser:
        """Open the tab, with a desktop viewport of width x height CSS pixels."""
        target = self.send("Target.createTarget", session=False, url="about:blank")["targetId"]
        self._session = self.send("Target.attachToTarget", session=False, targetId=target, flatten=True)[
            "sessionId"
        ]
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        return self

    def navigate(self, url: str) -> None:
        """Load url and wait for its load event."""
        self._events = [e for e in self._events if e["method"] != "Page.loadEventFired"]
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"{url}: {result['errorText']}")
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited), as JSON data."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"script failed: {text}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        import base64

        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))

    # -- life ----------------------------------------------------------------------------------

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self.send("Browser.close", session=False)
                self._proc.wait(timeout=10)
            except (BrowserError, OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._log.close()
        self._home.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
