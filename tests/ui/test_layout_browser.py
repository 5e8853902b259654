"""The page fits real screens (issue 7): 1024x768, 1280x720 and 1440x900, every tab.

Each size gets screenshots in build/screenshots (look at them) and checks that no text is clipped
or runs out of the sidebar or main area, no chart overflows its pane, the page never scrolls
sideways, the five cards stay on one row, and the per-layer bar legend covers no bar's value.
Nothing is requested from another host (no CDN CSS, no web fonts)."""

from __future__ import annotations

import pytest
from conftest import open_page
from ui_helpers import (
    card,
    layout_problems,
    overlaps,
    select_by_label,
    slider_handle,
    slider_title,
    text_boxes,
    wait_for_metrics,
)

from prunescope.explorer import Explorer
from prunescope.explorer.viewmodel import percent

pytestmark = pytest.mark.ui
expect = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").expect

SIZES = [(1024, 768), (1280, 720), (1440, 900)]


def _problems(page) -> list[str]:
    return layout_problems(page)


def _tab(page, title: str) -> None:
    page.locator(".bk-tab", has_text=title).click()
    page.wait_for_timeout(400)  # the tab's views lay out


@pytest.mark.parametrize(("width", "height"), SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_every_tab_fits_the_screen(browser, server, shots_dir, width, height):
    page = open_page(browser, server.url, width, height)
    try:
        wait_for_metrics(page)
        slider_handle(page, "Global sparsity").focus()
        for _ in range(18):  # PageUp: 5 steps of 1 %
            page.keyboard.press("PageUp")
        expected = Explorer.from_sample("digits_mlp").prune("magnitude", sparsity=0.9).cost()
        expect(card(page, "sparsity")).to_have_text(percent(expected.sparsity))
        expect(slider_title(page, "Global sparsity")).to_contain_text("90.0%")
        wait_for_metrics(page)
        page.wait_for_timeout(500)
        page.screenshot(path=str(shots_dir / f"app_{width}x{height}_pruning.png"))
        assert _problems(page) == []
        tops = [box["y"] for box in (c.bounding_box() for c in page.locator(".ps-metric").all())]
        assert len(tops) == 5 and max(tops) - min(tops) < 2, f"the cards wrap onto two rows: {tops}"
        # the bar legend sits above the frame: it covers none of the value labels
        legend = text_boxes(page, "from the global setting")
        # the bars' value labels (Bokeh's SVG draws each text twice: fill and stroke)
        labels = []
        for b in text_boxes(page, "90.0%"):
            if legend and b["x"] > legend[0]["x"] - 40 and b["y"] > legend[0]["y"] - 40 and not any(
                    abs(b["x"] - k["x"]) < 4 and abs(b["y"] - k["y"]) < 4 for k in labels):
                labels.append(b)
        assert legend and len(labels) == 3
        assert not any(overlaps(legend[0], label) for label in labels)
        assert 0 < min(b["y"] for b in labels) - legend[0]["y"] < 120, "the legend is drawn away from its frame"
        for title in ("Sensitivity", "Speed"):
            _tab(page, title)
            page.screenshot(path=str(shots_dir / f"app_{width}x{height}_{title.lower()}.png"))
            assert _problems(page) == [], title
        assert page.outside_requests == []
        assert page.errors == []
    finally:
        page.context.close()
    assert server.tracebacks() == []


def test_speed_chart_after_switching_models(browser, server, shots_dir):
    """Measured on digits_mlp, then digits_cnn: the chart's title, legend and frame stay in its pane."""
    page = open_page(browser, server.url, 1280, 720)
    try:
        wait_for_metrics(page)
        _tab(page, "Speed")
        page.get_by_role("button", name="Measure speed").click()
        expect(page.get_by_text("Measured for").first).to_be_visible(timeout=240_000)
        select_by_label(page, "Model").select_option("digits_cnn")
        expect(slider_title(page, "conv1.weight")).to_be_visible()
        expect(page.get_by_text("Not measured for digits_cnn yet", exact=True).first).to_be_attached()
        page.get_by_role("button", name="Measure speed").click()
        expect(page.get_by_text("Measured for").first).to_be_visible(timeout=240_000)
        page.wait_for_timeout(800)
        page.screenshot(path=str(shots_dir / "app_1280x720_speed_cnn.png"), full_page=True)
        assert _problems(page) == []
        legend = text_boxes(page, "measured (sparse kernels)")[0]
        axis = text_boxes(page, "speed-up over dense torch (x)")[0]
        note = page.get_by_text("Median of repeated runs", exact=False).bounding_box()
        # the legend is just above the frame (whose y axis label it precedes), the frame above the note
        assert legend["y"] < axis["y"] < legend["y"] + 300
        assert axis["y"] + axis["height"] <= note["y"]
        assert page.errors == []
    finally:
        page.context.close()
    assert server.tracebacks() == []
