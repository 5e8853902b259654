"""Keyboard operation of the sidebar (issue 7) and honest alerts for refused input.

A key press on a per-layer slider used to crash its callback (``_set_layer() takes 3 positional
arguments but 4 were given``: value and value_throttled arrived in one batch) and the setting was
never applied; the fixture fails any test after which the server printed a traceback. Fields the
browser used to clamp or ignore (seed -1, a huge seed, N=0, M=1) now raise an alert naming the
refused value and the allowed range, and the field shows the state again."""

from __future__ import annotations

import pytest
from ui_helpers import MEASURED, alert, card, input_by_label, select_by_label, slider_handle, slider_title, wait_for_metrics

from prunescope.explorer import Explorer
from prunescope.explorer.viewmodel import percent

pytestmark = [pytest.mark.ui, pytest.mark.timeout(400)]
expect = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").expect


def _enter(page, label: str, text: str) -> None:
    field = input_by_label(page, label)
    field.fill(text)
    field.press("Enter")


def test_per_layer_slider_moves_by_keyboard(page):
    wait_for_metrics(page)
    slider_handle(page, "fc2.weight").focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")  # one step of 1 %
    page.keyboard.press("PageUp")  # five steps
    ex = Explorer.from_sample("digits_mlp")
    ex.set_layer_sparsity("fc2.weight", 0.08)
    expect(slider_title(page, "fc2.weight")).to_contain_text("set by hand")
    expect(slider_title(page, "fc2.weight")).to_contain_text("8.0%")
    expect(card(page, "sparsity")).to_have_text(percent(ex.cost().sparsity))
    expect(card(page, "accuracy")).to_have_text(percent(ex.evaluate().accuracy))
    expect(card(page, "params")).to_have_text(f"{ex.cost().params_nonzero:,}")
    expect(alert(page)).to_be_hidden()
    assert page.errors == []


def test_method_and_seed_by_keyboard_refuse_bad_seeds(page):
    wait_for_metrics(page)
    method = select_by_label(page, "Pruning method")
    method.focus()
    page.keyboard.press("ArrowDown")  # the next option, without opening the list
    expect(method).not_to_have_value("Magnitude (layer-wise)")
    expect(page.locator("[data-metric=accuracy] .ps-value")).to_have_text(MEASURED)
    method.select_option(label="Random")
    seed = input_by_label(page, "Seed")
    expect(seed).to_be_visible()
    expect(seed).to_have_value("0")
    for refused in ("-1", "10000000000000000000"):
        _enter(page, "Seed", refused)
        expect(alert(page)).to_be_visible()
        expect(alert(page)).to_contain_text(f"got {refused}")
        expect(alert(page)).to_contain_text("[0, 2**63)")
        expect(seed).to_have_value("0")  # the field shows the state again
    _enter(page, "Seed", "3")
    expect(alert(page)).to_be_hidden()
    slider_handle(page, "Global sparsity").focus()
    page.keyboard.press("PageUp")
    ex = Explorer.from_sample("digits_mlp").prune("random", sparsity=0.05, seed=3)
    expect(card(page, "accuracy")).to_have_text(percent(ex.evaluate().accuracy))
    assert page.errors == []


def test_nm_fields_refuse_n0_and_m1(page):
    wait_for_metrics(page)
    select_by_label(page, "Pruning method").select_option(label="N:M semi-structured")
    expect(input_by_label(page, "n")).to_have_value("2")
    _enter(page, "n", "1")
    expect(slider_title(page, "fc1.weight")).to_contain_text(percent(1 - 1 / 4))
    _enter(page, "m", "8")
    expect(slider_title(page, "fc1.weight")).to_contain_text(percent(1 - 1 / 8))
    _enter(page, "n", "0")
    expect(alert(page)).to_contain_text("at least 1, not 0")
    expect(input_by_label(page, "n")).to_have_value("1")
    _enter(page, "m", "1")
    expect(alert(page)).to_contain_text("at least 2, not 1")
    expect(input_by_label(page, "m")).to_have_value("8")  # 1:8 stays applied, and the field says so
    ex = Explorer.from_sample("digits_mlp").prune("nm", n=1, m=8)
    expect(card(page, "sparsity")).to_have_text(percent(ex.cost().sparsity))
    assert page.errors == []
