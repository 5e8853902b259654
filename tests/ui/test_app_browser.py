"""The served app in headless Chromium: it loads offline, sliders re-measure, models switch."""

from __future__ import annotations

import re

import pytest
from ui_helpers import accuracy_card, select_by_label, slider_handle, wait_for_metrics

from prunescope.explorer import Explorer
from prunescope.explorer.viewmodel import percent as _percent

pytestmark = pytest.mark.ui
expect = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").expect


def test_page_loads_offline_and_shows_measured_metrics(page):
    dense = Explorer.from_sample("digits_mlp").dense_metrics()
    assert wait_for_metrics(page, timeout_ms=180_000) == _percent(dense.accuracy)
    for key in ("loss", "params", "flops", "sparsity"):
        expect(page.locator(f"[data-metric={key}] .ps-value")).not_to_have_text("–")
    expect(page.locator("[data-metric=params] .ps-value")).to_have_text(f"{dense.params_nonzero:,}")
    expect(page.locator(".bk-slider-title", has_text="fc1.weight")).to_be_visible()
    assert page.outside_requests == []  # no CDN, no web fonts
    assert page.errors == []


def test_moving_the_global_slider_changes_the_accuracy(page):
    before = wait_for_metrics(page, timeout_ms=180_000)
    handle = slider_handle(page, "Global sparsity")
    handle.focus()
    for _ in range(16):  # PageUp moves 5 steps of 1 %
        page.keyboard.press("PageUp")
    expect(page.locator(".bk-slider-title", has_text="Global sparsity")).to_contain_text("80.0%")
    expected = Explorer.from_sample("digits_mlp").prune("magnitude", sparsity=0.8).evaluate()
    expect(accuracy_card(page)).to_have_text(_percent(expected.accuracy), timeout=15_000)
    assert accuracy_card(page).inner_text() != before
    expect(page.locator("[data-metric=sparsity] .ps-value")).to_have_text(_percent(expected.sparsity))
    assert page.errors == []


def test_switching_model_shows_the_cnn_layers(page):
    wait_for_metrics(page, timeout_ms=180_000)
    select_by_label(page, "Model").select_option("digits_cnn")
    titles = page.locator(".bk-slider-title")
    expect(titles.filter(has_text="conv1.weight")).to_be_visible(timeout=20_000)
    found = (re.match(r"([\w.]+\.weight)\b", t) for t in titles.all_inner_texts())
    layers = list(dict.fromkeys(m.group(1) for m in found if m))  # the per-weight sliders, in order
    assert layers == Explorer.from_sample("digits_cnn").layers
    dense = Explorer.from_sample("digits_cnn").dense_metrics()
    expect(accuracy_card(page)).to_have_text(_percent(dense.accuracy), timeout=15_000)
    expect(page.locator("[data-metric=params] .ps-value")).to_have_text(f"{dense.params_nonzero:,}")
    assert page.errors == []
