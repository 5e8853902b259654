"""Take docs/screenshot.png: the Pruning tab on digits_cnn, LAMP at 80 % sparsity, measured.

    .venv/bin/python tests/ui/screenshot.py [--out docs/screenshot.png]

Runs ``panel serve explorer`` and Debian's headless Chromium like the browser tests.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from playwright.sync_api import expect, sync_playwright
from ui_helpers import REPO, launch_chromium, panel_server, select_by_label, slider_handle, wait_for_metrics


def take_screenshot(out: Path, width: int = 1400, height: int = 1000) -> Path:
    """Drive the app to a meaningful setting and save a ``width`` x ``height`` PNG at ``out``."""
    with panel_server() as server, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.set_default_timeout(60_000)
        page.goto(server.url)
        wait_for_metrics(page, timeout_ms=90_000)
        select_by_label(page, "Model").select_option("digits_cnn")
        expect(page.locator(".bk-slider-title", has_text="conv1")).to_be_visible()
        select_by_label(page, "Pruning method").select_option(label="LAMP")
        slider_handle(page, "Global sparsity").focus()
        for _ in range(16):  # PageUp: 5 steps of 1 % a press
            page.keyboard.press("PageUp")
        expect(page.locator(".bk-slider-title", has_text="Global sparsity")).to_contain_text("80.0%")
        wait_for_metrics(page, timeout_ms=90_000)
        page.wait_for_timeout(1500)  # the full split follows the estimate; let the last redraws land
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
        browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshot.png")
    print(take_screenshot(parser.parse_args().out))


if __name__ == "__main__":
    main()
