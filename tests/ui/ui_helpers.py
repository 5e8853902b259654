"""Start ``panel serve explorer`` and drive Debian's headless Chromium (browser tests, screenshot).

Used by ``conftest.py`` and ``screenshot.py``; never downloads a browser.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
#: An accuracy card that shows a measured number, e.g. "97.0 %".
MEASURED = re.compile(r"^\d+\.\d %$")


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def panel_server(timeout: float = 60.0) -> Iterator[str]:
    """Run ``panel serve explorer`` from the repo root (this interpreter's Panel); yields the app URL.

    The server is stopped (its process group) on exit; if it dies or never listens, the error
    carries the tail of its log.
    """
    port = free_port()
    keep = os.environ.get("PRUNESCOPE_SERVER_LOG")  # a path to keep the server's log for debugging
    log = open(keep, "w+") if keep else tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "panel", "serve", "explorer", "--port", str(port),
         "--allow-websocket-origin", f"localhost:{port}"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )

    def log_tail() -> str:
        log.seek(0)
        return log.read()[-3000:]

    try:
        deadline = time.monotonic() + timeout
        while not _accepts(port):
            if proc.poll() is not None:
                raise RuntimeError(f"panel serve exited with {proc.returncode}:\n{log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"panel serve did not listen on {port} in {timeout:.0f} s:\n{log_tail()}")
            time.sleep(0.1)
        yield f"http://localhost:{port}/explorer"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


def launch_chromium(playwright):
    """Debian's Chromium, headless (raises FileNotFoundError if it is not installed)."""
    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(f"{CHROMIUM} is not installed (apt-get install chromium)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def accuracy_card(page):
    """The accuracy card's value (Playwright's CSS locators pierce Bokeh's shadow roots)."""
    return page.locator("[data-metric=accuracy] .ps-value")


def wait_for_metrics(page, timeout_ms: float = 60_000) -> str:
    """Wait until the accuracy card shows a measured value; returns its text."""
    card = accuracy_card(page)
    card.filter(has_text=MEASURED).wait_for(timeout=timeout_ms)
    return card.inner_text()


def slider_handle(page, title: str):
    """The noUiSlider handle of the slider whose title starts with ``title``."""
    group = page.locator(".bk-input-group", has=page.locator(".bk-slider-title", has_text=title))
    return group.locator(".noUi-handle")


def select_by_label(page, label: str):
    """The <select> of the Panel Select widget labelled exactly ``label``."""
    exact = page.locator("label", has_text=re.compile(rf"^{re.escape(label)}$"))
    return page.locator(".bk-input-group", has=exact).locator("select")
