"""Render Panel views inline in a notebook with every Panel stylesheet inside the page.

With ``pn.extension(inline=True)`` Panel inlines its JavaScript, but its components' stylesheets
still point at ``cdn.holoviz.org`` (Panel issue #8707). Panel swaps them for inline copies once,
after the first render, one model at a time: each swap makes Bokeh re-walk the whole document
(O(models^2): ~20 s for the full app), and every later update brings the CDN URLs back (an HTML
pane resets its stylesheets whenever its text changes; a new widget is made with them), so an
offline notebook asks the CDN for ``loading.css``, ``theme/default.css`` and ``native.css`` after
every slider move.

The fix here works where Panel looks its stylesheets up: Panel keeps one stylesheet object per
URL and document (``state._stylesheets[doc]``) and reuses it for every component of that document,
at the first render and at every update. :func:`inline_document_stylesheets` fills that table for
one document with stylesheets whose URL is a ``data:`` URL holding the CSS file Panel ships, so no
component of that document is ever given a CDN URL and nothing needs swapping afterwards.
Nothing global is patched: the table belongs to the one document rendered.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import threading
from typing import TYPE_CHECKING, Any, Iterator

from bokeh.models import ImportedStyleSheet

if TYPE_CHECKING:  # pragma: no cover
    from bokeh.document import Document
    from panel.viewable import Viewable, Viewer

#: How a data URL of a stylesheet starts.
DATA_CSS = "data:text/css;base64,"


def _dist_file(url: str):
    """The file in Panel's ``dist`` folder that ``url`` (on the CDN or this server) names, or None."""
    from panel.io.resources import CDN_DIST, DIST_DIR, LOCAL_DIST

    path = url.split("?", 1)[0]
    for prefix in (CDN_DIST, LOCAL_DIST, "./" + LOCAL_DIST, "/" + LOCAL_DIST):
        if path.startswith(prefix):
            candidate = (DIST_DIR / path[len(prefix):]).resolve()
            if candidate.is_relative_to(DIST_DIR.resolve()) and candidate.is_file():
                return candidate
            return None
    return None


@functools.lru_cache(maxsize=256)
def inline_css_url(url: str) -> str | None:
    """A ``data:`` URL holding the CSS that the Panel stylesheet ``url`` names (on Panel's CDN or
    under this server's ``static/extensions/panel/``), read from the installed Panel; ``None``
    for any other URL or a file Panel does not ship."""
    found = _dist_file(url)
    if found is None:
        return None
    return DATA_CSS + base64.b64encode(found.read_bytes()).decode("ascii")


class InlineStylesheets(dict):
    """Panel's stylesheet table of one document (URL -> stylesheet model) that answers every URL of
    a Panel CSS file with a stylesheet holding that file as a ``data:`` URL.

    Panel asks ``url in table`` and then ``table[url]`` before it makes a stylesheet, so every
    component of the document gets the inline one, at the first render and at every update; URLs
    of other files (a user's own CSS) are kept as Panel stores them. One instance per document:
    a Bokeh model belongs to one document only.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()

    def _inline(self, url: Any) -> ImportedStyleSheet | None:
        if not isinstance(url, str) or (data := inline_css_url(url)) is None:
            return None
        with self._lock:
            sheet = dict.get(self, url)
            if sheet is None or getattr(sheet, "url", None) != data:
                sheet = ImportedStyleSheet(url=data)
                dict.__setitem__(self, url, sheet)
            return sheet

    def __contains__(self, url: object) -> bool:
        return self._inline(url) is not None or dict.__contains__(self, url)

    def __missing__(self, url: Any) -> ImportedStyleSheet:
        sheet = self._inline(url)
        if sheet is None:
            raise KeyError(url)
        return sheet

    def __getitem__(self, url: Any) -> Any:
        sheet = self._inline(url)
        return sheet if sheet is not None else dict.__getitem__(self, url)

    def __setitem__(self, url: Any, sheet: Any) -> None:
        if self._inline(url) is None:  # a Panel CSS file keeps its inline copy
            dict.__setitem__(self, url, sheet)

    def get(self, url: Any, default: Any = None) -> Any:
        return self[url] if url in self else default

    def __bool__(self) -> bool:  # Panel tests ``if cache and url in cache``
        return True


def inline_document_stylesheets(doc: "Document") -> InlineStylesheets:
    """Make every Panel component rendered into ``doc`` (now and at later updates) use inline
    copies of Panel's CSS instead of ``cdn.holoviz.org`` URLs; returns the document's table."""
    from panel.io.state import state

    table = state._stylesheets.get(doc)
    if not isinstance(table, InlineStylesheets):
        table = InlineStylesheets(table or {})
        state._stylesheets[doc] = table
    return table


@contextlib.contextmanager
def _rendering_inline(view: "Viewable") -> Iterator[None]:
    """While active, ``view`` renders into documents whose stylesheets are inline (the override
    is an attribute of this one view object, removed on exit)."""
    from bokeh.document import Document

    render_model = type(view)._render_model

    def render_into_inline_document(doc: "Document | None" = None, comm: Any = None):
        doc = Document() if doc is None else doc
        inline_document_stylesheets(doc)
        return render_model(view, doc, comm)

    view._render_model = render_into_inline_document
    try:
        yield
    finally:
        del view._render_model


def notebook_mimebundle(viewable: "Viewable | Viewer", include: Any = None, exclude: Any = None):
    """``viewable._repr_mimebundle_`` with Panel's stylesheets inline when ``pn.config.inline`` is
    set (``pn.extension(inline=True)``): no request to ``cdn.holoviz.org`` at render or on any later
    update, and no per-model stylesheet swap after the render. Otherwise Panel's own rendering."""
    import panel as pn
    from panel.viewable import Viewer

    view = viewable._create_view() if isinstance(viewable, Viewer) else viewable
    if not pn.config.inline:
        return view._repr_mimebundle_(include, exclude)
    with _rendering_inline(view):
        return view._repr_mimebundle_(include, exclude)
