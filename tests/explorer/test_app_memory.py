"""A closed session leaves nothing behind (issue 7): its app, explorers and threads are released,
and the freed heap goes back to the operating system (``explorer/app/memory.py``)."""

from __future__ import annotations

import asyncio
import gc
import platform
import threading
import weakref
from types import SimpleNamespace

import pytest
from panel.io.state import set_curdoc

from prunescope.explorer.app import ExplorerApp
from prunescope.explorer.app import memory

pytestmark = pytest.mark.usefixtures("one_torch_thread")
glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")


class _SessionDocument:
    """The parts of a served Bokeh document the app uses: a session, next-tick callbacks (kept,
    never run) and session-destroyed callbacks."""

    session_context = SimpleNamespace(request=SimpleNamespace(arguments={}))

    def __init__(self) -> None:
        self.ticks, self.destroyed = [], []
        self.add_next_tick_callback = self.ticks.append

    def on_session_destroyed(self, *callbacks) -> None:
        self.destroyed.extend(callbacks)


def test_a_destroyed_session_releases_its_app_explorers_and_threads(monkeypatch):
    released = []
    monkeypatch.setattr(memory, "release_memory", lambda: released.append(1) or True)
    before = set(threading.enumerate())
    doc = _SessionDocument()
    with set_curdoc(doc):
        app = ExplorerApp(model="digits_mlp")
    app.controls.sparsity.value = 0.5
    assert app.wait_idle()
    threads = [t for t in threading.enumerate() if t not in before]
    assert threads and all(t.name.startswith("prunescope-") for t in threads)
    refs = [weakref.ref(app), weakref.ref(app.explorer)]
    assert doc.destroyed
    for callback in doc.destroyed:
        callback(doc.session_context)  # what Bokeh calls when the browser session ends
    assert released == [1]  # no event loop here: at once
    for thread in threads:
        thread.join(10)
    assert [t.name for t in threads if t.is_alive()] == []
    del app, doc, callback  # the loop's name holds the dispatcher, which holds app.close
    gc.collect()
    assert [ref() for ref in refs] == [None, None]


def test_release_is_scheduled_on_the_running_loop(monkeypatch):
    released = []
    monkeypatch.setattr(memory, "release_memory", lambda: released.append(1) or True)

    async def session_ends() -> list[int]:
        memory.schedule_release(0.05)
        at_once = list(released)
        await asyncio.sleep(0.3)
        return at_once

    assert asyncio.run(session_ends()) == []  # not inside the session-destroyed callback
    assert released == [1]


@glibc
def test_release_memory_returns_fragmented_free_heap_to_the_system():
    """Free 9 of every 10 small blocks (glibc cannot shrink its heap from the top past the kept
    ones): the resident size stays up until ``release_memory`` trims the free pages inside."""
    psutil = pytest.importorskip("psutil")
    proc = psutil.Process()
    blocks = [bytearray(16_384) for _ in range(12_000)]  # ~190 MB, each under glibc's mmap threshold
    for block in blocks:
        block[::4096] = b"x" * len(block[::4096])  # touch every page
    kept = blocks[::10]
    del blocks
    gc.collect()
    before = proc.memory_info().rss
    assert memory.release_memory() is True
    after = proc.memory_info().rss
    assert before - after > 100 * 2**20, f"RSS {before / 2**20:.0f} MB -> {after / 2**20:.0f} MB"
    assert len(kept) == 1_200
