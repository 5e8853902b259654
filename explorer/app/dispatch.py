"""Getting results from compute threads back onto one browser session's document, safely.

Bokeh documents may only be changed while their lock is held, on the server's event loop. The
compute threads (:class:`~prunescope.explorer.worker.LatestWorker`) call their callbacks on their
own thread, so every view update they cause goes through a :class:`SessionDispatcher`: it
captures the session's document when the app is built (inside the session) and hands each
update to ``pn.state.execute(..., schedule=True)`` with that document set as Panel's current
one. Panel then calls ``doc.add_next_tick_callback`` (the one Document method Bokeh allows from
other threads) and runs the update on the event loop, under the document lock, with errors
reported through Panel's exception handler instead of killing the loop. Updates made before the
page has loaded wait for Panel's ``onload`` and run then, in order, on the event loop.

Outside a server (tests, a notebook without a session) there is no event loop to hop to: updates
run at once on the calling thread. In a Jupyter kernel, comm messages sent from a background
thread do not reach the page (ipykernel 7), so there the app measures on the kernel's own thread
(:attr:`SessionDispatcher.in_kernel`); an evaluation takes milliseconds.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable

import panel as pn
from panel.io.document import unlocked
from panel.io.state import set_curdoc

from prunescope.explorer.app.memory import schedule_release

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.worker import LatestWorker

log = logging.getLogger(__name__)


def session_callback(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a widget or button callback of a view so the Bokeh models it changes directly
    (a ColumnDataSource's data, a figure's title) reach the page however Panel calls it.

    Panel runs the callbacks of Bokeh *events* (a button click, Enter in a text field, and the
    value changes it flushes before them) on the event loop *without* the document lock; a direct
    model change there raises "_pending_writes should be non-None when we have a document lock".
    Panel's own updates go through ``panel.io.document.unlocked()`` on that path, and so do ours:
    inside it, changes are collected and sent to the page; with the lock held, or outside a
    server, it changes nothing."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with unlocked():
            return fn(*args, **kwargs)

    return run


class SessionDispatcher:
    """Run callables on the event loop of the session that built this object, from any thread."""

    def __init__(self) -> None:
        doc = pn.state.curdoc
        self._doc = doc if doc is not None and doc.session_context is not None else None
        self._closed = threading.Event()
        self._on_end: list[Callable[[], None]] = []  # run when the session ends
        # Updates that arrive before the page has loaded wait here (see __call__).
        self._lock = threading.Lock()
        self._early: list[Callable[[], None]] | None = None
        if self._doc is not None:
            self._early = []
            # Panel keeps onload callbacks in a WeakKeyDictionary keyed by the document: a callback
            # holding this object (which holds the document) would keep a page that never loaded,
            # and its whole session, alive for good. It holds a weak reference instead.
            this = weakref.ref(self)

            def loaded() -> None:
                dispatcher = this()
                if dispatcher is not None:
                    dispatcher._loaded()

            pn.state.onload(loaded)

    def _loaded(self) -> None:
        """Panel's onload callback (the page is up, the session is set up): the waiting updates
        go to the event loop like any later one, in order."""
        with self._lock:
            early, self._early = self._early or [], None
        for update in early:
            self(update)

    @property
    def served(self) -> bool:
        """Whether this object belongs to a live server session (else updates run inline)."""
        return self._doc is not None

    @property
    def in_kernel(self) -> bool:
        """Whether this object lives in a Jupyter kernel outside a server session."""
        if self._doc is not None or "ipykernel" not in sys.modules:
            return False
        from IPython import get_ipython

        return getattr(get_ipython(), "kernel", None) is not None

    @property
    def closed(self) -> bool:
        """Whether the session ended (updates are dropped from then on)."""
        return self._closed.is_set()

    def __call__(self, update: Callable[[], None]) -> None:
        """Schedule ``update`` on the session's event loop (inline when not served); no-op once closed."""
        if self.closed:
            return
        if self._doc is None:
            update()
            return
        with self._lock:
            if self._early is not None:
                # The page has not loaded yet: a compute thread finishing while Bokeh is still
                # setting the session up must not hand it a callback then (one in about 25 fresh
                # sessions never got its first result); they run in order once the page is up.
                self._early.append(update)
                return
        try:
            with set_curdoc(self._doc):
                pn.state.execute(update, schedule=True)
        except Exception:  # noqa: BLE001 - the session may be going away under us
            log.debug("dropped an update for a closing session", exc_info=True)

    def submit(self, worker: "LatestWorker", job: Callable[[], Any], on_done: Callable[[Any], None],
               on_error: Callable[[BaseException], None]) -> None:
        """Run ``job`` on ``worker``; its result or error reaches ``on_done`` / ``on_error`` on the
        session's loop. Inside a Jupyter kernel, where threads cannot update the page, run it inline."""
        if self.in_kernel:
            try:
                result = job()
            except Exception as err:  # noqa: BLE001 - handed to the view, like any engine error
                on_error(err)
            else:
                on_done(result)
            return
        worker.submit(job, on_done=lambda result: self(lambda: on_done(result)),
                      on_error=lambda err: self(lambda: on_error(err)))

    def on_destroyed(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the browser session ends (nothing is registered when not served)."""
        if self._doc is None:
            return
        if not self._on_end:  # one Bokeh callback per session runs them all, then frees the memory once
            self._doc.on_session_destroyed(self._session_destroyed)
        self._on_end.append(callback)

    def _session_destroyed(self, session_context) -> None:
        self._closed.set()
        for callback in self._on_end:
            try:
                callback()
            except Exception:  # noqa: BLE001 - one view failing to stop must not keep the others running
                log.exception("a view failed to close at the end of its session")
        # The session's objects are garbage now, but glibc keeps the pages its threads freed:
        # without this the server's RSS grew ~5 MB per closed session (issue 7, see memory.py).
        schedule_release()

    def close(self) -> None:
        """Drop every later update (the session is over)."""
        self._closed.set()
