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
#: Exceptions tornado logs when a closed page's websocket is written to (see ``Server.tracebacks``).
CLOSED_SOCKET_ERRORS = ("tornado.websocket.WebSocketClosedError", "tornado.iostream.StreamClosedError")
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
        """Every Python traceback the server printed (each with the lines after it), except
        tornado's report of a write to a websocket whose browser page had already closed: a
        page closing while the server sends is a race of the network, not an error of the app."""
        text = self.log()
        found = []
        for m in re.finditer("Traceback", text):
            block = text[m.start():m.start() + 1500]
            raised = next((line for line in block.splitlines()[1:] if line and not line[0].isspace()), "")
            if not raised.startswith(CLOSED_SOCKET_ERRORS):
                found.append(block)
        return found


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


def input_by_label(page, label: str, within: str = "#sidebar"):
    """The <input> of the Panel input widget (IntInput, TextInput) labelled exactly ``label``,
    in the page area ``within`` (the sidebar: other tabs have fields of the same name)."""
    exact = page.locator("label", has_text=re.compile(rf"^{re.escape(label)}$"))
    return page.locator(within).locator(".bk-input-group", has=exact).locator("input")


def alert(page):
    """The app's alert above the tabs."""
    return page.locator(".alert-danger")


#: Finds what does not fit: text clipped by its own box, text or charts outside the page region
#: (sidebar or main) that holds them or outside the viewport, a chart's drawing outside its pane.
#: Walks shadow roots (Bokeh renders every component inside one). Returns one line per problem.
_LAYOUT_JS = r"""(regionSelectors) => {
  const problems = [];
  const vw = document.documentElement.clientWidth;
  const up = (el) => el.parentElement || (el.getRootNode && el.getRootNode().host) || null;
  const region = (el) => { for (let e = up(el); e; e = up(e)) { if (e.matches && regionSelectors.some(s => e.matches(s))) return e; } return null; };
  const name = (el) => `${el.tagName.toLowerCase()}.${String(el.className.baseVal ?? el.className).split(' ')[0]}`
                        + ` "${(el.textContent || '').trim().slice(0, 40)}"`;
  const visible = (r) => r.width > 0 && r.height > 0;
  const inside = (r, p, tol = 1.5) => r.left >= p.left - tol && r.right <= p.right + tol
                                      && r.top >= p.top - tol && r.bottom <= p.bottom + tol;
  const insideX = (r, p, tol = 1.5) => r.left >= p.left - tol && r.right <= p.right + tol;
  const TEXT = '.bk-slider-title, label, .ps-title, .ps-value, .ps-dense, .bk-tab, button, p, b, span, td, th, text';
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.shadowRoot) walk(el.shadowRoot);
      if (!el.matches(TEXT)) continue;
      const r = el.getBoundingClientRect();
      if (!visible(r) || !(el.textContent || '').trim()) continue;
      const style = getComputedStyle(el);
      if (style.visibility === 'hidden') continue;
      if (r.right > vw + 1 || r.left < -1) problems.push(`${name(el)} outside the viewport (${r.left|0}..${r.right|0} of ${vw})`);
      if (el.tagName !== 'text' && style.overflowX !== 'visible' && el.scrollWidth > el.clientWidth + 1)
        problems.push(`${name(el)} clipped (${el.scrollWidth} px of text in ${el.clientWidth} px)`);
      const reg = region(el);  // sideways only: the sidebar and main area scroll vertically
      if (reg && !insideX(r, reg.getBoundingClientRect())) problems.push(`${name(el)} runs out of ${reg.id || reg.className}`);
    }
    for (const fig of root.querySelectorAll('.bk-Figure, .bk-Canvas')) {
      const host = fig.getBoundingClientRect();
      if (!visible(host)) continue;
      const pane = up(fig);
      const reg = region(fig);
      if (reg && !insideX(host, reg.getBoundingClientRect(), 2)) problems.push(`chart ${name(fig)} overflows ${reg.id}`);
      for (const svg of (fig.shadowRoot || fig).querySelectorAll('svg, canvas')) {
        const s = svg.getBoundingClientRect();
        if (visible(s) && !inside(s, host, 2)) problems.push(`chart drawing of ${name(fig)} outside its box`);
      }
    }
  };
  walk(document);
  if (document.scrollingElement.scrollWidth > vw + 1) problems.push(`page scrolls sideways (${document.scrollingElement.scrollWidth} > ${vw})`);
  return problems;
}"""


def layout_problems(page, regions: tuple[str, ...] = ("#sidebar", "#main")) -> list[str]:
    """Everything visible that does not fit (see ``_LAYOUT_JS``); ``regions`` are CSS selectors of
    the page areas that must contain their text and charts."""
    return page.evaluate(_LAYOUT_JS, list(regions))


def text_boxes(page, text: str) -> list[dict]:
    """Bounding boxes of the visible SVG/HTML elements whose whole text is ``text``."""
    return [box for box in (el.bounding_box() for el in page.get_by_text(text, exact=True).all()) if box]


def overlaps(a: dict, b: dict) -> bool:
    """Whether two Playwright bounding boxes intersect."""
    return not (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
                or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])
