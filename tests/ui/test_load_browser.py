"""The server under load and after its sessions close (issue 7).

A load test once left 610 server tracebacks (a key press on a per-weight slider crashed its
callback) and, after its 8 sessions closed, the server's resident memory at 708 MB where it had
been 478 MB. Here 8 browser sessions move the sliders by keyboard and mouse for 60 s; every
session's cards must then equal the engine's metrics for the setting that session's sliders show,
the server must have printed no traceback, and once the pages close its memory and threads must
come back. A second test opens and closes 20 sessions, four at a time.

Each test's baseline is the server's usage where the test starts, after a warm-up of four
sessions opened at once, used and closed: imports, the digits data, Bokeh's and Panel's per-process caches and
the kernels' JIT are paid once per server, not per session, and must not count as a leak. Memory
is the server's resident set size (its children included); "back" means within 10 % of that
baseline. The 20-session test runs in the suite (about a minute); the 8-session one on demand.
"""

from __future__ import annotations

import os

import random
import re
import time

import pytest
from conftest import open_page
from ui_helpers import MEASURED, card, slider_handle, slider_title, wait_for_metrics

from prunescope.explorer import Explorer
from prunescope.explorer.app.memory import RELEASE_DELAY
from prunescope.explorer.viewmodel import percent

pytestmark = [pytest.mark.ui, pytest.mark.slow, pytest.mark.timeout(900)]
#: The minute-long 8-session load test runs on demand (`make test-load`): with its page loads and
#: settling it takes about 2 minutes of this 2-core machine, too much for the 15-minute CI suite.
on_demand = pytest.mark.skipif(os.environ.get("PRUNESCOPE_LOAD_TESTS") != "1",
                               reason="the 8-session load test runs with PRUNESCOPE_LOAD_TESTS=1 (make test-load)")
psutil = pytest.importorskip("psutil")
expect = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").expect

WEIGHTS = ("fc1.weight", "fc2.weight", "fc3.weight")  # digits_mlp's prunable weights
SLIDERS = ("Global sparsity", *WEIGHTS)
KEYS = ("ArrowRight", "ArrowLeft", "PageUp", "PageDown", "Home")
#: Memory may exceed the baseline by this fraction once every session has closed (the issue's bar).
MEMORY_SLACK = 0.10
#: Threads the server may keep beyond the baseline (tornado's and Bokeh's executors may grow by one).
THREAD_SLACK = 2
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)%\s*$")


def _server_usage(server) -> tuple[int, int]:
    """The server's resident memory in bytes and its thread count, its child processes included."""
    proc = psutil.Process(server.pid)
    procs = [proc, *proc.children(recursive=True)]
    rss = threads = 0
    for p in procs:
        try:
            rss += p.memory_info().rss
            threads += p.num_threads()
        except psutil.NoSuchProcess:  # a child that ended meanwhile
            pass
    return rss, threads


def _settled_usage(server, rss_limit: float, thread_limit: int, timeout: float = 30.0) -> tuple[int, int]:
    """Poll the server's usage until both are under their limits or ``timeout`` seconds pass
    (closed sessions are destroyed by the server's unused-session check, every 0.5 s); returns
    the last reading."""
    deadline = time.monotonic() + timeout
    while True:
        rss, threads = _server_usage(server)
        if (rss <= rss_limit and threads <= thread_limit) or time.monotonic() > deadline:
            return rss, threads
        time.sleep(0.5)


def _close_and_settle(server, pages, baseline: tuple[int, int]) -> tuple[int, int]:
    """Close ``pages``' browser sessions and wait (up to 30 s) for the server to release them."""
    for page in pages:
        page.context.close()
    return _settled_usage(server, baseline[0] * (1 + MEMORY_SLACK), baseline[1] + THREAD_SLACK)


#: Sessions the warm-up opens at once: as many as the 20-session test keeps open.
WARM_UP_SESSIONS = 4


@pytest.fixture(scope="module")
def warmed(browser, server):
    """The server after a warm-up: ``WARM_UP_SESSIONS`` sessions opened at once, moved by keyboard
    and mouse, and closed. Imports, data, Bokeh's and Panel's per-process caches, the kernels' JIT
    and the allocator's heaps for that many live sessions are then paid: with a single warm-up
    session the server's heaps still grew over the first few concurrent sessions (+7.9-9.4 % after
    20 sessions, nearly all of it in the first eight, none per later session)."""
    threads_before = _server_usage(server)[1]
    pages = [open_page(browser, server.url) for _ in range(WARM_UP_SESSIONS)]
    for page in pages:
        wait_for_metrics(page)
        _keys(page, "Global sparsity", "PageUp")
        _drag(page, "fc1.weight", 12)
    for page in pages:
        _wait_measured(page)
        page.context.close()
    _settled_usage(server, float("inf"), threads_before)  # the sessions are destroyed, their threads stopped
    time.sleep(RELEASE_DELAY + 1.0)
    return server


@pytest.fixture
def baseline(warmed) -> tuple[int, int]:
    """The server's (RSS, threads) where this test starts: after the warm-up and any earlier test
    of the module (whose sessions have closed and been released)."""
    return _server_usage(warmed)


def _keys(page, slider: str, key: str, times: int = 1) -> None:
    slider_handle(page, slider).focus()
    for _ in range(times):
        page.keyboard.press(key)


def _drag(page, slider: str, dx: float) -> None:
    """Drag ``slider``'s handle ``dx`` pixels sideways with the mouse (press, move, release)."""
    handle = slider_handle(page, slider)
    handle.scroll_into_view_if_needed()
    box = handle.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx / 2, y, steps=2)
    page.mouse.move(x + dx, y, steps=2)
    page.mouse.up()


def _random_move(page, rng: random.Random) -> str:
    """One random slider move, by keyboard or mouse; returns what it did (for failure messages)."""
    slider = rng.choice(SLIDERS)
    if rng.random() < 0.5:
        key, times = rng.choice(KEYS), rng.randint(1, 3)
        _keys(page, slider, key, times)
        return f"{slider}: {key} x{times}"
    dx = rng.choice((-1, 1)) * rng.uniform(4, 30)
    _drag(page, slider, dx)
    return f"{slider}: drag {dx:+.0f} px"


def _wait_measured(page, timeout_ms: float = 120_000) -> None:
    """Wait until the accuracy card shows a full measured value and nothing is pending."""
    settled = page.locator(".ps-metric[data-metric=accuracy]:not(.ps-pending) .ps-value")
    settled.filter(has_text=MEASURED).wait_for(timeout=timeout_ms)


def _slider_value(page, slider: str) -> tuple[float, bool]:
    """The value a slider's title shows, as a fraction, and whether it says "set by hand"."""
    title = slider_title(page, slider).inner_text()
    found = _PERCENT.search(title)
    assert found, f"no percentage in the title {title!r}"
    return round(float(found.group(1)) / 100, 4), "set by hand" in title


def _expected_cards(page) -> tuple[dict[str, str], str]:
    """The accuracy and sparsity the engine gives for the setting this page's sliders show, and
    that setting in words: the global sparsity, then each weight the title says is set by hand."""
    ex = Explorer.from_sample("digits_mlp")
    method = ex.setting.weights.method
    sparsity, _ = _slider_value(page, "Global sparsity")
    ex.prune(method, sparsity=sparsity)
    hand = {}
    for weight in WEIGHTS:
        value, by_hand = _slider_value(page, weight)
        if by_hand:
            ex.set_layer_sparsity(weight, value)
            hand[weight] = value
    expected = {"accuracy": percent(ex.evaluate().accuracy), "sparsity": percent(ex.cost().sparsity)}
    return expected, f"{method} {sparsity:g}, by hand {hand}"


def _card_mismatches(page, moves: list[str]) -> list[str]:
    """How this page's cards differ from the engine's metrics for the setting its sliders show
    (the page has settled: its accuracy is measured and nothing is pending)."""
    expected, setting = _expected_cards(page)
    found = []
    for key, text in expected.items():
        try:
            expect(card(page, key)).to_have_text(text, timeout=10_000)
        except AssertionError:
            found.append(f"{key} card {card(page, key).inner_text()!r}, the engine {text!r} for {setting} "
                         f"(last moves {moves[-4:]})")
    return found


@on_demand
def test_eight_sessions_move_sliders_for_a_minute(browser, server, baseline):
    """8 sessions, each with its own seeded random mix of key presses and mouse drags on the global
    and per-weight sliders, interleaved round-robin for 60 s (Playwright's sync API drives one
    page at a time); then each page's cards against the engine, no traceback, memory back."""
    pages = [open_page(browser, server.url) for _ in range(8)]
    moves: list[list[str]] = [[] for _ in pages]
    problems, peak = [], 0
    try:
        for page in pages:
            wait_for_metrics(page)
        rngs = [random.Random(1000 + i) for i in range(len(pages))]
        end = time.monotonic() + 60.0
        while time.monotonic() < end:
            for page, rng, done in zip(pages, rngs, moves):
                done.append(_random_move(page, rng))
            peak = max(peak, _server_usage(server)[0])
        for page in pages:
            _wait_measured(page)
        for i, (page, done) in enumerate(zip(pages, moves)):
            problems += [f"page {i}: {p}" for p in _card_mismatches(page, done) + page.errors]
        problems += server.tracebacks()
        peak = max(peak, _server_usage(server)[0])
    finally:
        rss, threads = _close_and_settle(server, pages, baseline)
    summary = (f"baseline {baseline[0] / 2**20:.0f} MB / {baseline[1]} threads, peak {peak / 2**20:.0f} MB, "
               f"after close {rss / 2**20:.0f} MB / {threads} threads, {sum(map(len, moves))} moves")
    print(summary)
    assert problems == [], summary
    assert rss <= baseline[0] * (1 + MEMORY_SLACK), summary
    assert threads <= baseline[1] + THREAD_SLACK, summary


def test_twenty_closed_sessions_release_memory_and_threads(browser, server, baseline):
    """20 sessions, opened four at a time, each moving a per-weight slider by keyboard and waiting
    for its measured metrics, then closed: the server's memory and thread count come back."""
    peak = 0
    for i in range(0, 20, 4):
        pages = [open_page(browser, server.url) for _ in range(4)]
        try:
            for j, page in enumerate(pages):
                wait_for_metrics(page)
                weight = WEIGHTS[(i + j) % len(WEIGHTS)]
                _keys(page, weight, "PageUp")
                expect(slider_title(page, weight)).to_contain_text("set by hand")  # the server took the move
            for page in pages:
                _wait_measured(page)
            peak = max(peak, _server_usage(server)[0])
        finally:
            for page in pages:
                page.context.close()
    assert server.tracebacks() == []
    rss, threads = _close_and_settle(server, [], baseline)
    summary = (f"baseline {baseline[0] / 2**20:.0f} MB / {baseline[1]} threads, peak {peak / 2**20:.0f} MB, "
               f"after close {rss / 2**20:.0f} MB / {threads} threads")
    print(summary)
    assert rss <= baseline[0] * (1 + MEMORY_SLACK), summary
    assert threads <= baseline[1] + THREAD_SLACK, summary
