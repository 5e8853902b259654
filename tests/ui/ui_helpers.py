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
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
#: An accuracy card that shows a measured number, e.g. "97.0%".
MEASURED = re.compile(r"^\d+\.\d%$")
#: Hosts a page may talk to: this machine only.
LOCAL_PREFIXES = ("http://localhost", "http://127.0.0.1", "ws://localhost", "ws://127.0.0.1", "data:", "blob:",
                  "about:")


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Server:
    """A running server: its page ``url``, process id and log (stdout and stderr together)."""

    url: str
    pid: int
    log_file: IO[str]

    def log(self) -> str:
        """Everything the server printed so far."""
        self.log_file.flush()
        with open(self.log_file.name) as f:
            return f.read()

    def tracebacks(self) -> list[str]:
        """Every Python traceback the server printed (each with the lines after it)."""
        text = self.log()
        return [text[m.start():m.start() + 1500] for m in re.finditer("Traceback", text)]


@contextlib.contextmanager
def server_process(argv: list[str], port: int, url: str, timeout: float = 120.0,
                   cwd: Path = REPO, env: dict | None = None) -> Iterator[Server]:
    """Run ``argv`` until it listens on ``port``; yields a :class:`Server`; stops its process group."""
    keep = os.environ.get("PRUNESCOPE_SERVER_LOG")  # a path to keep the server's log for debugging
    log = open(keep, "w+") if keep else tempfile.NamedTemporaryFile(mode="w+", suffix=".log")
    proc = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **(env or {})})
    server = Server(url, proc.pid, log)
    try:
        deadline = time.monotonic() + timeout
        while not _accepts(port):
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[:4]} exited with {proc.returncode}:\n{server.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{argv[:4]} did not listen on {port} in {timeout:.0f} s:\n{server.log()[-3000:]}")
            time.sleep(0.1)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


@contextlib.contextmanager
def panel_server(timeout: float = 120.0, extra_args: tuple[str, ...] = ()) -> Iterator[Server]:
    """Run ``panel serve explorer`` from the repo root (this interpreter's Panel).

    ``--check-unused-sessions 500 --unused-session-lifetime 1000`` let a closed page's session be
    destroyed within a couple of seconds (Bokeh's defaults wait 15 s and more)."""
    port = free_port()
    argv = [sys.executable, "-m", "panel", "serve", "explorer", "--port", str(port),
            "--allow-websocket-origin", f"localhost:{port}",
            "--check-unused-sessions", "500", "--unused-session-lifetime", "1000", *extra_args]
    with server_process(argv, port, f"http://localhost:{port}/explorer", timeout) as server:
        yield server


def launch_chromium(playwright):
    """Debian's Chromium, headless (raises FileNotFoundError if it is not installed)."""
    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(f"{CHROMIUM} is not installed (apt-get install chromium)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def record_requests(page) -> None:
    """Collect ``page.errors`` (page errors), ``page.requests`` (every URL) and
    ``page.outside_requests`` (those to another host) from now on."""
    page.errors, page.requests, page.outside_requests = [], [], []
    page.on("pageerror", lambda err: page.errors.append(str(err)))

    def on_request(req) -> None:
        page.requests.append(req.url)
        if not req.url.startswith(LOCAL_PREFIXES):
            page.outside_requests.append(req.url)

    page.on("request", on_request)
    page.on("websocket", lambda ws: on_request(ws))


def accuracy_card(page):
    """The accuracy card's value (Playwright's CSS locators pierce Bokeh's shadow roots)."""
    return page.locator("[data-metric=accuracy] .ps-value")


def card(page, key: str):
    """The value of metric card ``key`` (accuracy, loss, params, flops, sparsity)."""
    return page.locator(f"[data-metric={key}] .ps-value")


def wait_for_metrics(page, timeout_ms: float = 120_000) -> str:
    """Wait until the accuracy card shows a full measured value (not an estimate); returns its text."""
    value = accuracy_card(page)
    value.filter(has_text=MEASURED).wait_for(timeout=timeout_ms)
    return value.inner_text()


def slider_group(page, title: str):
    """The input group of the slider whose title starts with ``title`` (exact weight names)."""
    exact = page.locator(".bk-slider-title", has_text=re.compile(rf"^{re.escape(title)}\b"))
    return page.locator(".bk-input-group", has=exact)


def slider_handle(page, title: str):
    """The noUiSlider handle of the slider whose title starts with ``title``."""
    return slider_group(page, title).locator(".noUi-handle")


def slider_title(page, title: str):
    """The title (name and value) of the slider whose title starts with ``title``."""
    return slider_group(page, title).locator(".bk-slider-title")


def select_by_label(page, label: str):
    """The <select> of the Panel Select widget labelled exactly ``label``."""
    exact = page.locator("label", has_text=re.compile(rf"^{re.escape(label)}$"))
    return page.locator(".bk-input-group", has=exact).locator("select")


def input_by_label(page, label: str):
    """The <input> of the Panel input widget (IntInput, TextInput) labelled exactly ``label``."""
    exact = page.locator("label", has_text=re.compile(rf"^{re.escape(label)}$"))
    return page.locator(".bk-input-group", has=exact).locator("input")


def alert(page):
    """The app's alert above the tabs."""
    return page.locator(".alert-danger")
