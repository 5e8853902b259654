"""The app inline in a notebook (``pn.extension(inline=True)``): every stylesheet is inside the page
at the first render and after updates (Panel issue #8707), and the fast render draws exactly what
Panel's own inline rendering draws."""

from __future__ import annotations

import base64
import json
from collections import Counter
from urllib.parse import urlparse

import panel as pn
import pytest
from bokeh.models import ImportedStyleSheet
from panel.io.notebook import EXEC_MIME
from panel.io.resources import CDN_DIST, DIST_DIR, JS_VERSION
from panel.io.state import state

from prunescope.explorer.app import ExplorerApp
from prunescope.explorer.app.notebook import DATA_CSS, InlineStylesheets, inline_css_url, notebook_mimebundle

STYLESHEET_TYPES = {"ImportedStyleSheet", "InlineStyleSheet", "GlobalImportedStyleSheet", "GlobalInlineStyleSheet"}
#: Panel adds its one global Location model to the first render in a process only.
FIRST_RENDER_ONLY = {"panel.models.location.Location"}


@pytest.fixture
def inline_notebook(monkeypatch):
    """Panel configured as after ``pn.extension(inline=True)`` in a notebook, restored afterwards."""
    monkeypatch.setattr(pn.extension, "_loaded", True)
    with pn.config.set(inline=True):
        yield


@pytest.fixture
def app():
    """The app with its first evaluation shown (Panel's own path serializes whatever a worker
    thread wrote meanwhile: a metrics update between its stylesheet swap and the serialization
    brings the CDN URLs back, so a reference render must not race with one)."""
    app = ExplorerApp("digits_mlp")
    assert app.wait_idle(60)
    yield app
    app.wait_idle(60)
    app.close()


def docs_json(bundle: dict) -> dict:
    """The Bokeh document JSON inside a notebook mimebundle (Panel's ``var docs_json = {...}``)."""
    html = bundle["text/html"]
    start = html.index("var docs_json = ") + len("var docs_json = ")
    return json.JSONDecoder().raw_decode(html, start)[0]


def serialized_models(node, found: dict | None = None) -> dict[str, dict]:
    """Every model the JSON defines (``{"type": "object", "name", "id", "attributes"}``), by id."""
    found = {} if found is None else found
    if isinstance(node, dict):
        if node.get("type") == "object" and "id" in node and "name" in node:
            found[node["id"]] = node
        for value in node.values():
            serialized_models(value, found)
    elif isinstance(node, list):
        for value in node:
            serialized_models(value, found)
    return found


def css_text(entry, models: dict[str, dict]) -> str:
    """The CSS one entry of a ``stylesheets`` list applies: inline text, a data URL's content, or a URL."""
    if isinstance(entry, str):
        return entry
    model = models[entry["id"]]
    attributes = model.get("attributes", {})
    if model["name"].endswith("InlineStyleSheet"):
        return attributes["css"]
    url = attributes["url"]
    return base64.b64decode(url[len(DATA_CSS):]).decode("utf-8") if url.startswith(DATA_CSS) else url


def stylesheet_urls(models: dict[str, dict]) -> list[str]:
    return [m["attributes"]["url"] for m in models.values() if m["name"].endswith("ImportedStyleSheet")]


def is_local(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme in ("data", "") or (parsed.scheme in ("http", "https") and parsed.hostname in ("localhost", "127.0.0.1"))


def rendering(bundle: dict) -> tuple[Counter, Counter]:
    """What a render draws: how many models of each kind (stylesheets aside) and, per component
    kind, the CSS of its stylesheets in order (however the stylesheets are stored)."""
    models = serialized_models(docs_json(bundle))
    kinds = Counter(m["name"] for m in models.values() if m["name"] not in STYLESHEET_TYPES | FIRST_RENDER_ONLY)
    styles = Counter(
        (m["name"], tuple(css_text(e, models) for e in m["attributes"]["stylesheets"]))
        for m in models.values() if m.get("attributes", {}).get("stylesheets")
    )
    return kinds, styles


def document_of(meta: dict):
    return state._views[meta[EXEC_MIME]["id"]][2]


def test_inline_css_url_holds_the_file_panel_ships():
    url = inline_css_url(f"{CDN_DIST}css/loading.css?v={JS_VERSION}")
    assert url.startswith(DATA_CSS)
    assert base64.b64decode(url[len(DATA_CSS):]) == (DIST_DIR / "css" / "loading.css").read_bytes()
    assert inline_css_url("static/extensions/panel/bundled/theme/native.css") == inline_css_url(
        f"{CDN_DIST}bundled/theme/native.css")
    assert inline_css_url("https://example.org/own.css") is None
    assert inline_css_url(f"{CDN_DIST}css/no_such_file.css") is None
    assert inline_css_url(f"{CDN_DIST}../../../../etc/passwd") is None  # nothing outside Panel's dist


def test_the_table_keeps_other_stylesheets_and_answers_panels_own():
    table = InlineStylesheets()
    own = ImportedStyleSheet(url="https://example.org/own.css")
    table["https://example.org/own.css"] = own
    assert table["https://example.org/own.css"] is own and "https://example.org/other.css" not in table
    panel_css = f"{CDN_DIST}css/alerts.css"
    table[panel_css] = ImportedStyleSheet(url=panel_css)  # Panel storing its CDN sheet: the inline one stays
    assert panel_css in table and table[panel_css].url == inline_css_url(panel_css)
    assert table[panel_css] is table.get(panel_css)  # one model per URL and document


def test_the_app_renders_with_every_stylesheet_inline(inline_notebook, app):
    bundle, meta = app._repr_mimebundle_()
    models = serialized_models(docs_json(bundle))
    urls = stylesheet_urls(models)
    assert urls and all(url.startswith(DATA_CSS) for url in urls), sorted(set(urls) - {u for u in urls if u.startswith(DATA_CSS)})
    assert "cdn.holoviz.org" not in json.dumps(docs_json(bundle))
    assert len(set(urls)) == len(urls)  # each CSS file once per document, shared by its components


def test_updates_after_the_render_stay_inline(inline_notebook, app):
    """An HTML pane resets its stylesheets when its text changes and new widgets are made with
    Panel's CDN URLs: after a method change, an alert and a tab switch none points off this machine."""
    _, meta = app._repr_mimebundle_()
    doc = document_of(meta)
    app.explorer.prune("nm", n=2, m=4)  # new option widgets, metrics and bars redrawn
    app.wait_idle(60)
    app.show_error(ValueError("refused 0.37; allowed 0 or 0.5"))
    app.tabs.active = 2  # Speed
    app.explorer.prune("lamp", sparsity=0.5)
    app.wait_idle(60)
    urls = [s.url for s in doc.models if isinstance(s, ImportedStyleSheet)]
    assert urls and [u for u in urls if not is_local(u)] == []
    assert all(u.startswith(DATA_CSS) for u in urls)


def test_a_small_view_renders_as_panel_renders_it(inline_notebook, app):
    """The sidebar alone: the same models and the same CSS on every component as Panel's own
    inline rendering (which swaps each stylesheet after the render)."""
    sidebar = pn.Column(*app.controls.widgets(), app.metrics, app.alert)
    ours, _ = notebook_mimebundle(sidebar)
    reference, _ = pn.Column._repr_mimebundle_(pn.Column(*app.controls.widgets(), app.metrics, app.alert))
    assert rendering(ours) == rendering(reference)
    assert sum(rendering(ours)[0].values()) > 20


@pytest.mark.slow
def test_the_full_app_renders_as_panel_renders_it(inline_notebook, app):
    """Panel's own path on the full app takes ~20 s (one document re-walk per swapped model)."""
    ours, _ = app._repr_mimebundle_()
    reference, _ = app._create_view()._repr_mimebundle_()
    kinds, styles = rendering(ours)
    assert (kinds, styles) == rendering(reference)
    assert sum(kinds.values()) > 100  # sidebar, cards and the visible tab (the others are built when shown)
