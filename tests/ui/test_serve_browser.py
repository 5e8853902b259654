"""``prunescope serve`` in headless Chromium: a ``--model`` factory and an entry-point plug-in in the
picker, weight uploads (accepted for one session only; bad files refused, the session intact) and
the Export of a plot carrying the same data as ``prunescope figure``.

One server per module (``prunescope serve --model mine=<factory written here> --max-upload-mib 1``)
with the plug-in made discoverable through a dist-info directory on the server's PYTHONPATH (the
project's venv is never changed).
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save
from ui_helpers import REPO, accuracy_card, free_port, select_by_label, server_process, slider_handle, wait_for_metrics

from prunescope.explorer import Explorer
from prunescope.explorer.viewmodel import percent
from prunescope.sample_models import get_sample_model

pytestmark = pytest.mark.ui
expect = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").expect

PLUGIN = REPO / "tests" / "explorer" / "plugin_pkg"
FACTORY = '''
from prunescope.sample_models import get_sample_model


def make():
    """digits_mlp's trained weights under another name: a (model, data) pair."""
    spec = get_sample_model("digits_mlp")
    return spec.load(), spec.data("test")
'''
MAX_UPLOAD_MIB = 1


def _percent(fraction: float) -> str:
    return percent(fraction)  # as the metric cards round


def _plugin_site(root: Path) -> Path:
    """A directory that makes the plug-in importable and its entry point visible (PYTHONPATH)."""
    site = root / "site"
    info = site / "prunescope_tiny_plugin-0.1.0.dist-info"
    info.mkdir(parents=True)
    shutil.copy(PLUGIN / "prunescope_tiny_plugin.py", site)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: prunescope-tiny-plugin\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[prunescope.models]\ntiny = prunescope_tiny_plugin:make_explorer\n")
    return site


@pytest.fixture(scope="module")
def served():
    """``prunescope serve`` on a factory file and the plug-in; yields the :class:`ui_helpers.Server`."""
    root = Path(tempfile.mkdtemp(prefix="prunescope-serve-test-"))
    (root / "models.py").write_text(FACTORY)
    site = _plugin_site(root)
    port = free_port()
    argv = [sys.executable, "-m", "prunescope.explorer.cli", "serve", "--port", str(port),
            "--model", f"mine={root / 'models.py'}:make", "--max-upload-mib", str(MAX_UPLOAD_MIB)]
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    try:
        with server_process(argv, port, f"http://localhost:{port}/explorer", cwd=root,
                            env={"PYTHONPATH": path}) as server:
            yield server
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _new_page(browser, url: str):
    """A fresh browser session (1400x900) recording its page errors."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(120_000)
    page.errors = []
    page.on("pageerror", lambda err: page.errors.append(str(err)))
    page.goto(url, timeout=180_000)  # the first session on a busy machine can take a while
    return page


@pytest.fixture
def page(browser, served):
    """A fresh session on the served app; the test fails on a server traceback."""
    before = len(served.tracebacks())
    page = _new_page(browser, served.url)
    yield page
    page.context.close()
    assert served.tracebacks()[before:] == []


def _upload(page, name: str, data: bytes) -> None:
    page.locator(".ps-upload-weights input[type=file]").set_input_files(
        files=[{"name": name, "mimeType": "application/octet-stream", "buffer": data}])


def _alert(page):
    return page.locator(".alert").filter(has_text="Not applied")


def _state_bytes(model: str, checkpoint: str) -> bytes:
    return save({k: v.contiguous() for k, v in get_sample_model(model).state_dict(checkpoint).items()})


def _raise_global_sparsity(page, steps: int) -> None:
    handle = slider_handle(page, "Global sparsity")
    handle.focus()
    for _ in range(steps):  # PageUp moves 5 steps of 1 %
        page.keyboard.press("PageUp")


class _WritesFile:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_factory_and_plugin_models_are_in_the_picker_and_the_slider_measures(page):
    wait_for_metrics(page, timeout_ms=90_000)
    picker = select_by_label(page, "Model")
    options = picker.locator("option").all_inner_texts()
    assert {"digits_mlp", "digits_cnn", "tiny", "mine"} <= set(options)
    picker.select_option("mine")
    spec = get_sample_model("digits_mlp")
    mine = Explorer(spec.load(), spec.data("test"), name="mine")
    expect(accuracy_card(page)).to_have_text(_percent(mine.dense_metrics().accuracy), timeout=90_000)
    _raise_global_sparsity(page, 18)  # 90 %
    expected = mine.prune("magnitude", sparsity=0.9).evaluate()
    assert expected.accuracy != mine.dense_metrics().accuracy
    expect(accuracy_card(page)).to_have_text(_percent(expected.accuracy), timeout=90_000)

    sys.path.insert(0, str(PLUGIN))
    try:
        import prunescope_tiny_plugin
    finally:
        sys.path.remove(str(PLUGIN))
    tiny = Explorer(*prunescope_tiny_plugin.make_explorer(), name="tiny").prune("magnitude", sparsity=0.9)
    picker.select_option("tiny")  # the global setting carries over to the plug-in's model
    expect(accuracy_card(page)).to_have_text(_percent(tiny.evaluate().accuracy), timeout=90_000)
    assert page.errors == []


def test_weight_uploads_are_checked_and_stay_in_their_session(browser, served, tmp_path):
    first, second = _new_page(browser, served.url), _new_page(browser, served.url)
    try:
        for page in (first, second):
            wait_for_metrics(page, timeout_ms=90_000)
            select_by_label(page, "Model").select_option("digits_cnn")
        trained = Explorer.from_sample("digits_cnn").dense_metrics().accuracy
        early = Explorer.from_sample("digits_cnn", "early").dense_metrics().accuracy
        init = Explorer.from_sample("digits_cnn", "init").dense_metrics().accuracy
        for page in (first, second):
            expect(accuracy_card(page)).to_have_text(_percent(trained), timeout=90_000)

        _upload(first, "early.safetensors", _state_bytes("digits_cnn", "early"))
        expect(accuracy_card(first)).to_have_text(_percent(early), timeout=90_000)
        expect(first.locator(".ps-weights-note")).to_contain_text("uploaded early.safetensors")
        _upload(second, "init.safetensors", _state_bytes("digits_cnn", "init"))
        expect(accuracy_card(second)).to_have_text(_percent(init), timeout=90_000)
        expect(accuracy_card(first)).to_have_text(_percent(early))  # neither sees the other's weights

        good = get_sample_model("digits_cnn").state_dict("early")
        nan = {k: v.clone().contiguous() for k, v in good.items()}
        nan["fc2.weight"][0, 0] = float("nan")
        wrong = {**good, "fc2.weight": torch.zeros(10, 63)}
        marker = tmp_path / "pwned.txt"
        refused = [
            ("model.pt", pickle.dumps({"fc2.weight": _WritesFile(str(marker))}), "pickled"),
            ("wrong.safetensors", save(wrong), "wrong shapes"),
            ("nan.safetensors", save(nan), "non-finite"),
            ("cut.safetensors", _state_bytes("digits_cnn", "early")[:-1000], "truncated"),
            ("big.safetensors", b"\0" * (MAX_UPLOAD_MIB * 2**20 + 1), "upload limit"),
        ]
        for name, data, message in refused:
            _upload(first, name, data)
            expect(_alert(first)).to_contain_text(name, timeout=90_000)
            expect(_alert(first)).to_contain_text(message)
            expect(accuracy_card(first)).to_have_text(_percent(early))
        assert not marker.exists()  # nothing uploaded was executed

        _raise_global_sparsity(first, 16)  # the session keeps working, on its uploaded weights
        pruned = Explorer.from_sample("digits_cnn", "early").prune("magnitude", sparsity=0.8).evaluate()
        expect(accuracy_card(first)).to_have_text(_percent(pruned.accuracy), timeout=90_000)
        expect(_alert(first)).to_be_hidden()
        expect(accuracy_card(second)).to_have_text(_percent(init))
        assert first.errors == [] and second.errors == []
        assert served.tracebacks() == []  # refusals are answers, not server errors
    finally:
        first.context.close()
        second.context.close()


def test_app_export_and_cli_figure_carry_the_same_data(page, tmp_path):
    wait_for_metrics(page, timeout_ms=90_000)
    select_by_label(page, "Pruning method").select_option(label="LAMP")
    _raise_global_sparsity(page, 15)  # 75 %
    expect(page.locator(".bk-slider-title", has_text="Global sparsity")).to_contain_text("75", timeout=90_000)
    page.locator(".ps-export-allocation select").select_option(label="CSV (data)")
    with page.expect_download() as exported:
        page.locator(".ps-export-allocation .bk-btn").click()
    assert exported.value.suggested_filename == "digits_mlp-allocation.csv"
    app_csv = Path(exported.value.path()).read_bytes()
    with page.expect_download() as saved:
        page.locator(".ps-save-recipe .bk-btn").click()
    recipe = tmp_path / saved.value.suggested_filename
    saved.value.save_as(recipe)
    cli_csv = tmp_path / "cli.csv"
    result = subprocess.run(
        [sys.executable, "-m", "prunescope.explorer.cli", "figure", "allocation", "--recipe", str(recipe),
         "--out", str(tmp_path / "cli.pdf"), "--csv", str(cli_csv), "--quiet"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert result.returncode == 0, result.stderr
    assert app_csv == cli_csv.read_bytes()
    table = pd.read_csv(io.BytesIO(app_csv))
    expected = Explorer.from_sample("digits_mlp").prune("lamp", sparsity=0.75)
    assert list(table["kept_weights"]) == [int(expected.masks[n].sum()) for n in expected.layers]
    assert page.errors == []
