"""The Tokens tab in headless Chromium, on the sample ViT: the keep-ratio slider moved by
keyboard re-measures the cards (equal to the engine's metrics for that token budget), the budget
table shows the tokens each block processes, a refused schedule shows an alert naming the bad
value while the app keeps working, and the tab fits its page."""

from __future__ import annotations

import math

import pytest
from ui_helpers import (
    accuracy_card, alert, input_by_label, layout_problems, select_by_label, slider_handle, slider_title,
    wait_for_metrics,
)

from prunescope.explorer import Explorer
from prunescope.explorer.tokens import get_strategy
from prunescope.explorer.viewmodel import percent

pytestmark = [pytest.mark.ui, pytest.mark.timeout(400)]
expect = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").expect

KEEP = "Keep ratio"  # its title: "Keep ratio (fraction of patch tokens): <value>"


def _open_tokens_tab(page) -> None:
    wait_for_metrics(page, timeout_ms=180_000)
    select_by_label(page, "Model").select_option("shapes_vit")
    expect(slider_title(page, "blocks.0.attn.qkv.weight")).to_be_visible(timeout=60_000)
    wait_for_metrics(page, timeout_ms=120_000)
    page.locator(".bk-tab", has_text="Tokens").click()
    expect(slider_handle(page, KEEP)).to_be_visible(timeout=60_000)


def test_keep_slider_by_keyboard_measures_the_token_budget(page, shots_dir):
    _open_tokens_tab(page)
    strategy = get_strategy("cls_attention")
    select_by_label(page, "Token strategy").select_option(label=strategy.display_name)
    slider_handle(page, KEEP).focus()
    for _ in range(10):  # PageDown: 5 steps of 0.01
        page.keyboard.press("PageDown")
    expect(slider_title(page, KEEP)).to_contain_text("0.5")
    ex = Explorer.from_sample("shapes_vit")
    ex.set_token_budget(0.5, strategy="cls_attention")
    expected = ex.evaluate()
    expect(accuracy_card(page)).to_have_text(percent(expected.accuracy), timeout=60_000)
    patches = 64
    kept = math.ceil(0.5 * patches) + 1  # and the CLS token
    table = page.locator("#main table.panel-df", has=page.locator("th", has_text="tokens processed"))
    rows = table.locator("tbody tr")
    expect(rows.first).to_be_visible(timeout=30_000)
    headers = [h.strip() for h in table.locator("thead th").all_inner_texts()]
    column = headers.index("tokens processed")
    cells = [row.split("\t") for row in rows.all_inner_texts()]
    assert [float(c[column]) for c in cells[:4]] == [patches + 1, kept, kept, kept], (headers, cells)
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots_dir / "app_tokens_tab.png"), full_page=True)
    assert layout_problems(page) == []
    assert page.outside_requests == [] and page.errors == []


def test_a_refused_schedule_shows_an_alert_and_the_app_keeps_working(page):
    _open_tokens_tab(page)
    select_by_label(page, "Token strategy").select_option(label=get_strategy("cls_attention").display_name)
    select_by_label(page, "Schedule of the keep ratio").select_option(label="EViT drops (keep^n after n drops)")
    field = input_by_label(page, "EViT drop blocks (comma-separated)", within="#main")
    field.fill("1, nine")
    field.press("Enter")
    expect(alert(page)).to_contain_text("nine")
    field.fill("1, 3")
    field.press("Enter")
    expect(alert(page)).to_be_hidden()
    slider_handle(page, KEEP).focus()
    for _ in range(10):
        page.keyboard.press("PageDown")
    ex = Explorer.from_sample("shapes_vit")
    ex.set_token_budget([1.0, 0.5, 0.5, 0.25], strategy="cls_attention")  # keep 0.5, dropped at blocks 1 and 3
    expect(accuracy_card(page)).to_have_text(percent(ex.evaluate().accuracy), timeout=60_000)
