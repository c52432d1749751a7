"""Headless Chromium driven over the DevTools protocol on a pipe (no extra packages).

``--remote-debugging-pipe`` makes Chromium read NUL-terminated JSON commands on fd 3 and
answer on fd 4. Enough of the protocol for tests: open a page, evaluate JavaScript, type
text, press keys, take a screenshot.

    with Browser() as b:
        page = b.open("http://127.0.0.1:8000/")
        page.wait_for("document.body.dataset.state === 'ready'")
        page.type_text("Hello"); page.press("Enter")
        png = page.screenshot()
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _chromium import FLAGS, chromium


def ocr(png: Path) -> str:
    """The text tesseract reads in a screenshot (make test installs tesseract-ocr)."""
    exe = shutil.which("tesseract")
    if exe is None:
        raise RuntimeError("tesseract is missing: apt-get install -y tesseract-ocr (make test installs it)")
    return subprocess.run([exe, str(png), "stdout"], capture_output=True, text=True, timeout=120, check=True).stdout


class Browser:
    def __init__(self, *, size: str = "1280,900") -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="reftlab-cdp-")
        cmd_r, self._cmd_w = os.pipe()  # we write commands, Chromium reads them on fd 3
        self._out_r, out_w = os.pipe()  # Chromium answers on fd 4

        def wire() -> None:  # in the child: put the pipe ends on fds 3 and 4
            a, b = os.dup(cmd_r), os.dup(out_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [
                chromium(),
                *[f for f in FLAGS if not f.startswith(("--enable-logging", "--v="))],
                "--remote-debugging-pipe",
                f"--user-data-dir={self._profile.name}",
                f"--window-size={size}",
                "--hide-scrollbars",
                "about:blank",
            ],
            pass_fds=(3, 4),
            preexec_fn=wire,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(cmd_r)
        os.close(out_w)
        self._buffer, self._next = b"", 0

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("Browser.close")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        for fd in (self._cmd_w, self._out_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._profile.cleanup()

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for reply in self._read(deadline):
                if reply.get("id") == self._next:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})

    def _read(self, deadline: float) -> list[dict]:
        import select

        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer")
            ready, _, _ = select.select([self._out_r], [], [], left)
            if ready:
                chunk = os.read(self._out_r, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self._buffer += chunk
        *whole, self._buffer = self._buffer.split(b"\0")
        return [json.loads(m) for m in whole if m]

    def open(self, url: str) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        page.call("Page.enable")
        page.call("Page.navigate", {"url": url})
        return page


class Page:
    def __init__(self, browser: Browser, session: str) -> None:
        self.browser, self.session = browser, session

    def call(self, method: str, params: dict | None = None, timeout: float = 30) -> dict:
        return self.browser.send(method, params, self.session, timeout)

    def eval(self, expression: str) -> Any:
        out = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in out:
            raise RuntimeError(f"{expression}: {out['exceptionDetails']}")
        return out["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60, every: float = 0.05) -> None:
        """Poll until ``expression`` is truthy."""
        deadline = time.monotonic() + timeout
        while not self._safe_eval(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression} stayed false for {timeout} s")
            time.sleep(every)

    def watch(self, sample: str, until: str, timeout: float = 120, every: float = 0.03) -> list[Any]:
        """Evaluate ``sample`` repeatedly until ``until`` holds; returns the distinct samples, in order."""
        seen: list[Any] = []
        deadline = time.monotonic() + timeout
        while True:
            value = self._safe_eval(sample)
            if not seen or seen[-1] != value:
                seen.append(value)
            if self._safe_eval(until):
                seen.append(self._safe_eval(sample))
                return seen
            if time.monotonic() > deadline:
                raise TimeoutError(f"{until} stayed false for {timeout} s; samples: {seen[-3:]}")
            time.sleep(every)

    def _safe_eval(self, expression: str) -> Any:
        try:
            return self.eval(expression)
        except RuntimeError:  # the page is still loading
            return None

    def type_text(self, text: str) -> None:
        self.call("Input.insertText", {"text": text})

    def press(self, key: str) -> None:
        codes = {"Enter": 13}
        for kind in ("keyDown", "keyUp"):
            params = {"type": kind, "key": key, "code": key, "windowsVirtualKeyCode": codes.get(key, 0)}
            if kind == "keyDown" and key == "Enter":
                params["text"] = "\r"
            self.call("Input.dispatchKeyEvent", params)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
        return path
