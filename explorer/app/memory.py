"""Giving a closed session's memory back to the operating system.

When a browser session ends, its views, explorers and worker threads are released (Bokeh destroys
the document, Panel schedules a garbage collection), yet the server's resident memory stays up:
each of the session's ~17 worker threads allocated in its own glibc malloc arena, and glibc keeps
the freed pages of those arenas mapped. Measured on ``panel serve explorer`` (digits_mlp, 2 cores):
5 sessions opened and closed left the RSS 35 MB above the baseline with no ExplorerApp left
alive; ``malloc_trim(0)`` brought it back 2 MB under the baseline. So after a session ends the
server collects the session's cycles and asks glibc to return its free pages
(:func:`release_memory`), a little later, once the session's threads have exited
(:func:`schedule_release`). Elsewhere (macOS, musl, Windows) only the collection runs.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import sys

log = logging.getLogger(__name__)

#: Seconds between a session's end and the release: its worker threads finish their job and exit.
RELEASE_DELAY = 2.0


def _malloc_trim() -> bool:
    """``malloc_trim(0)`` of glibc where there is one; returns whether it ran."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl has no malloc_trim)
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True


def release_memory() -> bool:
    """Collect garbage, then return glibc's free heap pages to the system; returns whether the
    trim ran (False where malloc is not glibc's: the collection still ran)."""
    gc.collect()
    return _malloc_trim()


def schedule_release(delay: float = RELEASE_DELAY) -> None:
    """Run :func:`release_memory` ``delay`` seconds from now on the running event loop (the
    server's, where sessions end), or at once when no loop runs (tests, scripts)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        release_memory()
        return

    def release() -> None:
        try:
            release_memory()
        except Exception:  # noqa: BLE001 - freeing memory must never break the server loop
            log.debug("release_memory failed", exc_info=True)

    loop.call_later(delay, release)
