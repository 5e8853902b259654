"""Take docs/screenshot.png: digits_cnn, LAMP at 80 % sparsity on numba-cpu, sensitivity and speed measured.

    .venv/bin/python tests/ui/screenshot.py [--out docs/screenshot.png]

Runs ``panel serve explorer`` and Debian's headless Chromium like the browser tests.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from playwright.sync_api import expect, sync_playwright
from ui_helpers import REPO, launch_chromium, panel_server, select_by_label, slider_handle, wait_for_metrics


def take_screenshot(out: Path, width: int = 1400, height: int = 1320) -> Path:
    """Drive the app to a meaningful setting and save a ``width`` x ``height`` PNG at ``out``."""
    with panel_server() as url, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.set_default_timeout(60_000)
        page.goto(url)
        wait_for_metrics(page, timeout_ms=90_000)
        select_by_label(page, "Model").select_option("digits_cnn")
        expect(page.locator(".bk-slider-title", has_text="conv1")).to_be_visible()
        select_by_label(page, "Pruning method").select_option(label="LAMP")
        slider_handle(page, "Global sparsity").focus()
        for _ in range(16):  # PageUp: 5 % a press
            page.keyboard.press("PageUp")
        expect(page.locator(".bk-slider-title", has_text="Global sparsity")).to_contain_text("80%")
        page.get_by_role("button", name="Run sensitivity sweep").click()
        expect(page.get_by_text("Measured:")).to_be_visible(timeout=120_000)
        select_by_label(page, "Evaluate with").select_option("numba-cpu")
        expect(page.locator("[data-metric=accuracy] .ps-title")).to_contain_text("numba-cpu", timeout=120_000)
        page.get_by_role("button", name="Measure speed").click()
        expect(page.get_by_text(re.compile("^Measured for"))).to_be_visible(timeout=120_000)
        page.wait_for_timeout(1000)  # let the last redraws land
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
