"""JupyterLab 4 in headless Chromium (issue 7): Run All of a notebook holding the widget and the
Panel app inline, then the widget's global slider moved by keyboard shows the engine's metrics
(and the app on the same explorer follows), the inline views fit JupyterLab's notebook width
(screenshots in build/screenshots: look at them) and no request leaves the machine.

JupyterLab runs on 127.0.0.1 with an empty token, its own kernelspec of this interpreter, and
settings, workspaces and runtime files in a temporary folder. Its news and update checks are
switched off (user setting of ``@jupyterlab/apputils-extension:notification``, ``news_url=''``)
and its extension manager is read-only, so nothing of JupyterLab's own asks another host either.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import open_page
from ui_helpers import free_port, layout_problems, server_process, wait_for_metrics

from prunescope.explorer import Explorer
from prunescope.explorer.viewmodel import MAX_SPARSITY, percent, view_model

pytestmark = [pytest.mark.ui, pytest.mark.slow]
expect = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").expect
pytest.importorskip("jupyterlab", reason="JupyterLab is not installed")

KERNEL = "prunescope-jupyterlab-test"
CELLS = [
    "import sys\nprint('kernel:', sys.executable)",
    'from prunescope.explorer import Explorer\nex = Explorer.from_sample("digits_mlp")\nw = ex.widget()\nw',
    "import panel as pn\npn.extension(inline=True)\nex.show()",
]
#: A 1280 px window with JupyterLab's default layout (file browser open): outputs are 848 px wide.
WIDTH, HEIGHT = 1280, 800
#: Tall enough to show a whole output in one screenshot (JupyterLab scrolls inside the notebook).
SHOT_HEIGHT = 2600
WIDGET = ".jp-OutputArea-output:has(> .widget-vbox)"
APP = ".jp-OutputArea-output:has([data-root-id])"

#: Boxes of the widget's elements that stick out of its output area, sideways (``[]``: none).
_OUT_OF_OUTPUT_JS = """(area) => { const box = area.getBoundingClientRect(); const found = [];
  for (const el of area.querySelectorAll('*')) { const r = el.getBoundingClientRect();
    if (r.width > 0 && (r.right > box.right + 1 || r.left < box.left - 1))
      found.push(`${el.tagName.toLowerCase()}.${String(el.className).split(' ')[0]} ${r.left|0}..${r.right|0} of ${box.left|0}..${box.right|0}`); }
  return found; }"""

#: Every Bokeh figure on display (not in a hidden tab) whose plot frame is smaller than ``minimum`` px wide or high while
#: its box is not (a chart drawn into nothing: only axis labels at its left edge).
_EMPTY_FRAMES_JS = """(minimum) => { const found = []; const seen = new Set();
  const visit = (v) => { if (!v || seen.has(v)) return; seen.add(v);
    if (v.frame && v.model && v.el && v.el.checkVisibility({visibilityProperty: true})
        && v.el.getBoundingClientRect().width >= minimum) {
      const f = v.frame.bbox; if (f.width < minimum || f.height < minimum)
        found.push(`"${v.model.title?.text ?? v.model.type}": frame ${f.width|0}x${f.height|0} in a ${v.el.getBoundingClientRect().width|0} px box`); }
    for (const c of (v.child_views ?? [])) visit(c); };
  for (const v of Object.values(window.Bokeh?.index ?? {})) visit(v);
  return found; }"""


def write_lab_folder(root: Path) -> dict[str, str]:
    """The notebook, a kernelspec of this interpreter and JupyterLab's settings under ``root``;
    returns the environment that makes JupyterLab use them (and nothing of the user's)."""
    spec = root / "data" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Prunescope (tests)", "language": "python",
    }))
    notification = root / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    (root / "notebooks").mkdir()
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(c) for c in CELLS],
        metadata={"kernelspec": {"name": KERNEL, "display_name": "Prunescope (tests)", "language": "python"}},
    )
    nbformat.write(nb, root / "notebooks" / "explorer.ipynb")
    return {"JUPYTER_PATH": str(root / "data"), "JUPYTER_CONFIG_DIR": str(root / "config"),
            "JUPYTER_RUNTIME_DIR": str(root / "runtime")}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 serving the notebook (``.url`` opens it)."""
    root = tmp_path_factory.mktemp("jupyterlab")
    env = write_lab_folder(root)
    port = free_port()
    argv = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", "--ip", "127.0.0.1",
        "--port", str(port), "--IdentityProvider.token=", "--ServerApp.password=",
        "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={root / 'notebooks'}",
        "--LabApp.news_url=", "--LabApp.extension_manager=readonly", "--LabApp.expose_app_in_browser=True",
        f"--LabApp.user_settings_dir={root / 'settings'}", f"--LabApp.workspaces_dir={root / 'workspaces'}",
    ]
    with server_process(argv, port, f"http://127.0.0.1:{port}/lab/tree/explorer.ipynb", env=env) as server:
        yield server


@pytest.fixture(scope="module")
def notebook(browser, lab):
    """The notebook after Run All (JupyterLab's command of menu Run > Run All Cells, once its
    kernel is connected and idle): widget and app shown, kernel idle again."""
    page = open_page(browser, lab.url, WIDTH, HEIGHT)
    page.locator(".jp-StatusBar-TextItem", has_text="| Idle").wait_for(timeout=120_000)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.locator(WIDGET).locator("table.prunescope-metrics").wait_for(timeout=180_000)
    wait_for_metrics(page, 180_000)  # the app's accuracy card, measured
    page.locator(".jp-Notebook-ExecutionIndicator[data-status=idle]").wait_for(timeout=120_000)
    yield page
    page.context.close()


def _shoot(page, selector: str, path: Path) -> None:
    """A screenshot of the whole output ``selector`` (the window made tall, its width unchanged)."""
    page.set_viewport_size({"width": WIDTH, "height": SHOT_HEIGHT})
    try:
        output = page.locator(selector).last
        output.scroll_into_view_if_needed()
        page.wait_for_timeout(600)  # JupyterLab and Bokeh lay out the taller window
        output.screenshot(path=str(path))
    finally:
        page.set_viewport_size({"width": WIDTH, "height": HEIGHT})


def test_the_kernel_is_this_interpreter(notebook):
    expect(notebook.locator(".jp-OutputArea-output").first).to_have_text(f"kernel: {sys.executable}")


def test_the_widget_slider_moved_by_keyboard_shows_the_engines_metrics(notebook):
    """End, then ten steps back (ArrowLeft), at a user's typing pace: the slider shows where the
    keys took it, no weight turns 'set by hand', and the metrics table shows exactly what the
    engine measures for that method and sparsity (the app on the same explorer shows it too)."""
    widget = notebook.locator(WIDGET)
    slider = widget.locator(".widget-slider", has=notebook.get_by_text("Sparsity", exact=True))
    slider.locator(".noUi-handle").focus()
    for key in ["End"] + ["ArrowLeft"] * 10:
        notebook.keyboard.press(key)
        notebook.wait_for_timeout(150)
    sparsity = round(MAX_SPARSITY - 10 * 0.01, 9)
    readout = slider.locator(".widget-readout")
    expect(readout).to_have_text(f"{sparsity:.1%}", timeout=10_000)
    notebook.wait_for_timeout(1500)  # late echoes of the kernel's redraws would arrive meanwhile
    expect(readout).to_have_text(f"{sparsity:.1%}", timeout=1_000)
    expect(widget.locator(".widget-label", has_text="set by hand")).to_have_count(0, timeout=1_000)
    expect(widget.locator("b", has_text="by hand")).to_have_count(0, timeout=1_000)
    label = widget.locator(".widget-dropdown select").first.evaluate("s => s.options[s.selectedIndex].text")
    method = view_model(Explorer.from_sample("digits_mlp")).methods[label.replace("\xa0", " ")]
    expected = Explorer.from_sample("digits_mlp").prune(method, sparsity=sparsity).evaluate()
    cell = {key: widget.locator(f"td[data-metric={key}]") for key in ("accuracy", "loss", "sparsity", "params_nonzero")}
    expect(cell["accuracy"]).to_have_attribute("data-value", repr(expected.accuracy))
    expect(cell["accuracy"]).to_have_text(percent(expected.accuracy))
    expect(cell["loss"]).to_have_text(f"{expected.loss:.4f}")
    expect(cell["sparsity"]).to_have_text(percent(expected.sparsity))
    expect(cell["params_nonzero"]).to_have_text(f"{expected.params_nonzero:,}")
    # the app inline on the same explorer follows the widget
    app_accuracy = notebook.locator(".ps-metric[data-metric=accuracy] .ps-value")
    expect(app_accuracy).to_have_text(percent(expected.accuracy), timeout=60_000)
    expect(notebook.locator(".ps-metric[data-metric=params] .ps-value")).to_have_text(f"{expected.params_nonzero:,}")


def test_the_inline_widget_fits_its_output(notebook, shots_dir):
    _shoot(notebook, WIDGET, shots_dir / "jupyterlab_widget.png")
    area = notebook.locator(WIDGET)
    assert area.bounding_box()["width"] >= 600  # JupyterLab's notebook width, not a sliver
    assert area.evaluate(_OUT_OF_OUTPUT_JS) == []
    widget_problems = [p for p in layout_problems(notebook, (".jp-OutputArea-output",)) if "bk-" not in p]
    assert widget_problems == []  # (Bokeh's elements, of the app below, are checked with its tabs)


def test_the_inline_app_shows_its_speed_tab_in_full(notebook, shots_dir):
    """The issue's speed chart (~110 px wide, labels overlapping, the right edge clipped)."""
    notebook.locator(".bk-tab", has_text="Speed").first.click()
    notebook.wait_for_timeout(800)
    _shoot(notebook, APP, shots_dir / "jupyterlab_app_speed.png")
    shown = [f.bounding_box() for f in notebook.locator(APP).last.locator(".bk-Figure").all() if f.is_visible()]
    assert len(shown) == 1 and shown[0]["width"] >= 400, shown
    assert notebook.evaluate(_EMPTY_FRAMES_JS, 100) == []
    assert layout_problems(notebook, (".jp-OutputArea-output",)) == []


def test_the_inline_app_shows_its_pruning_tab_in_full(notebook, shots_dir):
    """Shown again after the Speed tab: both figures drawn (they once had 0x0 frames: the tabs kept
    hidden views laid out at zero size), the mask view's export menu inside the output."""
    notebook.locator(".bk-tab", has_text="Pruning").first.click()
    notebook.wait_for_timeout(800)
    _shoot(notebook, APP, shots_dir / "jupyterlab_app_pruning.png")
    assert notebook.evaluate(_EMPTY_FRAMES_JS, 100) == []
    assert layout_problems(notebook, (".jp-OutputArea-output",)) == []


def test_nothing_leaves_the_machine(notebook):
    """After Run All, the slider moves and tab switches above (JupyterLab, the widget, Panel's
    inline views and their updates): every request went to this machine, no page error."""
    assert notebook.requests, "no request was recorded"
    assert notebook.outside_requests == []
    assert notebook.errors == []
