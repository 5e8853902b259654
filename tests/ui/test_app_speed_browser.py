"""The served app in headless Chromium: the backend select re-measures the cards, and
"Measure speed" draws the chart and table of the sparse kernels' speed-up."""

from __future__ import annotations

import re

import pytest
from ui_helpers import accuracy_card, select_by_label, slider_handle, wait_for_metrics

from prunescope.explorer import Explorer
from prunescope.explorer.app.speed_view import describe_spec
from prunescope.explorer.viewmodel import percent

pytestmark = pytest.mark.ui
expect = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").expect


def _move_global_slider(page, presses: int, key: str = "PageUp") -> None:
    slider_handle(page, "Global sparsity").focus()
    for _ in range(presses):  # PageUp/PageDown move 5 steps of 1 %
        page.keyboard.press(key)


def test_evaluate_with_numba_cpu(page):
    wait_for_metrics(page, timeout_ms=180_000)
    _move_global_slider(page, 16)
    expect(page.locator(".bk-slider-title", has_text="Global sparsity")).to_contain_text("80.0%")
    select_by_label(page, "Evaluate with").select_option("numba-cpu")
    title = page.locator("[data-metric=accuracy] .ps-title")
    expect(title).to_have_text("Accuracy (numba-cpu)", timeout=240_000)  # once the kernels are compiled
    expected = Explorer.from_sample("digits_mlp").prune("magnitude", sparsity=0.8).evaluate(backend="numba-cpu")
    expect(accuracy_card(page)).to_have_text(percent(expected.accuracy))
    expect(page.locator("[data-metric=loss] .ps-value")).to_have_text(f"{expected.loss:.3f}")
    assert page.errors == []


def test_measure_speed_shows_chart_and_table(page):
    wait_for_metrics(page, timeout_ms=180_000)
    _move_global_slider(page, 16)
    expect(page.locator(".bk-slider-title", has_text="Global sparsity")).to_contain_text("80.0%")
    page.locator(".bk-tab", has_text="Speed").click()
    page.get_by_role("button", name="Measure speed").click()
    status = page.get_by_text(re.compile("^Measured for"))
    expect(status).to_be_visible(timeout=240_000)
    label = describe_spec(Explorer.from_sample("digits_mlp").prune("magnitude", sparsity=0.8).setting.weights)
    expect(status).to_contain_text(f"{label}, batch 64, numba-cpu")
    rows = page.locator("table.panel-df tbody tr")
    expect(rows).to_have_count(4)
    cells = [row.split("\t") for row in rows.all_inner_texts()]
    assert [c[0] for c in cells] == ["fc1.weight", "fc2.weight", "fc3.weight", "model"]
    assert [c[1] for c in cells] == ["csr", "csr", "csr", "whole forward"]
    # the chart: its axes, legend and title are drawn (Bokeh's SVG output keeps text in the DOM)
    for text in ("whole model", "speed-up over dense torch (x)", "measured (sparse kernels)",
                 "theoretical (FLOPs reduction)", f"{label} · digits_mlp · batch 64 · numba-cpu"):
        expect(page.get_by_text(text, exact=True).first).to_be_attached()
    # a new setting: the measurement stays on screen, marked as measured for the old one
    _move_global_slider(page, 1, "PageDown")
    expect(page.get_by_text("setting changed")).to_be_visible(timeout=15_000)
    expect(page.get_by_text("setting changed")).to_contain_text(f"Measured for {label}")
    expect(rows).to_have_count(4)
    assert page.errors == []
