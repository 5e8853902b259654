"""Fixtures of the browser tests: one ``panel serve explorer`` and one Chromium per module."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # ui_helpers, shared with screenshot.py

from ui_helpers import CHROMIUM, launch_chromium, panel_server  # noqa: E402


@pytest.fixture(scope="module")
def app_url():
    with panel_server() as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed: browser tests need Debian's chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app_url):
    """A fresh browser session on the app (1400x900), with its page errors and outside requests."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.errors, page.outside_requests = [], []
    page.on("pageerror", lambda err: page.errors.append(str(err)))
    page.on("request", lambda req: page.outside_requests.append(req.url)
            if not req.url.startswith(("http://localhost", "data:", "blob:")) else None)
    page.goto(app_url)
    yield page
    context.close()
