"""Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe:
NUL-terminated JSON on file descriptors 3 and 4), without any client library.

Used where `--dump-dom`/`--screenshot` fall short: those need --virtual-time-budget to
wait for the page's fetches, and virtual time freezes performance.now() while script
runs (a 1e8-iteration loop measures 0.0 ms), so a page's own timings would read zero.
Here the page runs in real time; the test waits on a condition and reads values and a
screenshot from the same page load, so boxes and pixels agree.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any


class Browser:
    def __init__(self, executable: str, width: int = 1200, height: int = 800):
        # Chromium's helper processes may still write to the profile as they exit.
        self.profile = tempfile.TemporaryDirectory(prefix="chromium-cdp-", ignore_cleanup_errors=True)
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        argv = [executable, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--hide-scrollbars", "--force-color-profile=srgb", "--remote-debugging-pipe",
                f"--user-data-dir={self.profile.name}", f"--window-size={width},{height}", "about:blank"]

        # The protocol's fixed descriptors, 3 (chrome reads) and 4 (chrome writes), set by
        # the shell (a preexec dup2 would be undone by Popen's close_fds).
        shell = f'exec "$@" 3<&{to_chrome_r} 4>&{from_chrome_w}'
        self.proc = subprocess.Popen(["bash", "-c", shell, "chromium", *argv], pass_fds=(to_chrome_r, from_chrome_w),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer, self._next_id, self.session = b"", 0, None
        self.width, self.height = width, height
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)

    def call(self, method: str, **params: Any) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _read(self) -> dict:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium closed the pipe (exit {self.proc.poll()})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str, until: str = "document.body && document.body.dataset.state !== 'loading'",
             timeout: float = 60) -> None:
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        time.sleep(0.2)
        while time.monotonic() < deadline:
            try:
                if self.evaluate(f"!!({until})"):
                    return
            except RuntimeError:
                pass  # between documents
            time.sleep(0.1)
        raise AssertionError(f"{url}: {until!r} not true within {timeout}s")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        """Chromium and every helper process it started (its own process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)
        self.profile.cleanup()

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
