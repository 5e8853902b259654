"""App start-up: from launching ``panel serve explorer`` to measured metrics on the page.

    .venv/bin/python benchmarks/app_startup.py [--runs 3]

Each run starts a fresh server (its own process, so imports are cold) with headless Debian
Chromium already open, and times: the server listening; the first page showing a measured
accuracy (the first session imports torch and builds the model); a second session on the warm
server. Prints every run and the median. Needs /usr/bin/chromium; never downloads a browser.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
MEASURED = re.compile(r"^\d+\.\d\s?%$")  # the accuracy card once a measurement has arrived


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _page_seconds(browser, url: str) -> float:
    """Seconds from navigating to ``url`` until the accuracy card shows a measured value."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    start = time.perf_counter()
    page.goto(url)
    page.locator("[data-metric=accuracy] .ps-value").filter(has_text=MEASURED).wait_for(timeout=120_000)
    seconds = time.perf_counter() - start
    page.close()
    return seconds


def one_run(browser) -> dict[str, float]:
    """Start a server, load the page twice; seconds of each stage from the launch."""
    port = _free_port()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "panel", "serve", "explorer", "--port", str(port),
         "--allow-websocket-origin", f"localhost:{port}"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        while not _listening(port):
            if proc.poll() is not None or time.perf_counter() - start > 60:
                raise RuntimeError("panel serve did not start")
            time.sleep(0.05)
        listening = time.perf_counter() - start
        url = f"http://localhost:{port}/explorer"
        first = _page_seconds(browser, url)
        interactive = time.perf_counter() - start
        second = _page_seconds(browser, url)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    return {"listening": listening, "interactive": interactive, "first page": first, "second page": second}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is not installed")
    columns = ["listening", "interactive", "first page", "second page"]
    print("seconds from `panel serve explorer` launch; 'first page'/'second page' from navigation")
    print(f"{'run':>6} " + " ".join(f"{c:>12}" for c in columns))
    runs = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for i in range(args.runs):
            runs.append(one_run(browser))
            print(f"{i + 1:>6} " + " ".join(f"{runs[-1][c]:>12.2f}" for c in columns), flush=True)
        browser.close()
    print(f"{'median':>6} " + " ".join(f"{statistics.median(r[c] for r in runs):>12.2f}" for c in columns))


if __name__ == "__main__":
    main()
