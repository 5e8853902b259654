"""Fixtures of the browser tests: one ``panel serve explorer`` and one Chromium per module.

Timeouts are generous: on a loaded 2-core machine a first page load takes 20-40 s."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # ui_helpers, shared with screenshot.py

from ui_helpers import CHROMIUM, launch_chromium, panel_server, record_requests  # noqa: E402

SHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"


@pytest.fixture(scope="module")
def server():
    """The module's server (``.url``, ``.pid``, ``.log()``, ``.tracebacks()``)."""
    with panel_server() as srv:
        yield srv


@pytest.fixture(scope="module")
def app_url(server):
    return server.url


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("playwright.sync_api").expect.set_options(timeout=60_000)  # loaded CI machines
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed: browser tests need Debian's chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


def open_page(browser, url: str, width: int = 1400, height: int = 900):
    """A new browser session on ``url`` recording its errors and requests (``record_requests``)."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(120_000)
    record_requests(page)
    page.goto(url, timeout=180_000)
    return page


@pytest.fixture
def page(browser, server):
    """A fresh browser session on the app (1400x900); the test fails on a server traceback."""
    before = len(server.tracebacks())
    page = open_page(browser, server.url)
    yield page
    page.context.close()
    assert server.tracebacks()[before:] == []


@pytest.fixture(scope="session")
def shots_dir() -> Path:
    """Where the browser tests leave their screenshots (build/screenshots, to look at)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS
