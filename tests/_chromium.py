"""Headless Chromium for tests: render a local HTML file, report its DOM, console and a screenshot."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]
CONSOLE = re.compile(r":CONSOLE[^\]]*\] (.*)")


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise RuntimeError("headless Chromium is missing: apt-get install -y chromium (make test installs it)")
    return exe


@dataclass
class Rendered:
    dom: str
    console: list[str]
    screenshot: Path


def render(page: Path, workdir: Path, *, budget_ms: int = 15000, size: str = "1280,6000") -> Rendered:
    """Load ``page`` twice in fresh profiles: once dumping the DOM, once taking a screenshot."""
    url = page.resolve().as_uri()
    base = [chromium(), *FLAGS, f"--virtual-time-budget={budget_ms}"]
    dom_run = subprocess.run(
        [*base, f"--user-data-dir={workdir / 'profile-dom'}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=180,
    )
    if dom_run.returncode != 0:
        raise RuntimeError(f"chromium --dump-dom failed ({dom_run.returncode}): {dom_run.stderr[-2000:]}")
    shot = workdir / "screenshot.png"
    shot_run = subprocess.run(
        [
            *base,
            f"--user-data-dir={workdir / 'profile-shot'}",
            f"--window-size={size}",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    if shot_run.returncode != 0 or not shot.is_file():
        raise RuntimeError(f"chromium --screenshot failed ({shot_run.returncode}): {shot_run.stderr[-2000:]}")
    console = [m.group(1) for line in (dom_run.stderr + shot_run.stderr).splitlines() if (m := CONSOLE.search(line))]
    return Rendered(dom_run.stdout, console, shot)


class _FigureScan(HTMLParser):
    """For each ``div#<prefix>N``: its classes and whether an ``svg.main-svg`` sits inside it."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix, self.stack, self.figures = prefix, [], {}
        self.errors_text, self._in_errors = "", False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div":
            fid = a.get("id") or ""
            self.stack.append(fid if fid.startswith(self.prefix) else None)
            if fid.startswith(self.prefix):
                self.figures[fid] = {"class": a.get("class", ""), "svg": 0}
            self._in_errors = fid == "reftlab-errors"
        if tag == "svg" and "main-svg" in (a.get("class") or ""):
            for fid in filter(None, self.stack):
                self.figures[fid]["svg"] += 1

    def handle_endtag(self, tag):
        if tag == "div" and self.stack:
            self.stack.pop()
            self._in_errors = False

    def handle_data(self, data):
        if self._in_errors:
            self.errors_text += data


def scan_figures(dom: str, prefix: str) -> tuple[dict[str, dict], str]:
    """``({figure id: {"class", "svg"}}, text of #reftlab-errors)`` from a dumped DOM."""
    scan = _FigureScan(prefix)
    scan.feed(dom)
    return scan.figures, scan.errors_text.strip()
