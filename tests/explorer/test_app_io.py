"""The app's Export controls and Files card (no browser): exports carry the table the views draw
(checked against the engine and against a forward pass written here), downloads round-trip,
uploads swap weights for one session only and every bad file is refused with the session intact."""

from __future__ import annotations

import base64
import functools
import io
import pickle
import zipfile

import pandas as pd
import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save

from prunescope.explorer import Explorer
from prunescope.explorer.app import ExplorerApp
from prunescope.explorer.app import sensitivity_view
from prunescope.explorer.app.io_view import (
    compacted_payload,
    masks_payload,
    pruned_weights_payload,
    recipe_payload,
)
from prunescope.explorer.app.speed_view import speed_table
from prunescope.explorer.core.setting import Setting
from prunescope.explorer.export import masks_from_bytes
from prunescope.explorer.figures import figure_data
from prunescope.explorer.sparse_exec import SpeedReport
from prunescope.sample_models import get_sample_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mlp_app(close_app):
    app = ExplorerApp(model="digits_mlp")
    assert app.wait_idle()
    yield app
    close_app(app)


def _csv(payload: tuple[str, bytes]) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(payload[1]))


def _clicked(download) -> bytes:
    """Press a FileDownload as the browser does; the bytes it sends."""
    download._clicks += 1
    header, _, b64 = download.data.partition(",")
    assert header.startswith("data:")
    return base64.b64decode(b64)


def _upload(app: ExplorerApp, data: bytes, filename: str) -> None:
    app.files.weights_upload.param.update(value=data, filename=filename)
    assert app.files.wait_idle() and app.wait_idle()


# ------------------------------------------------------------------------------------ exports of plots
def test_allocation_export_is_the_per_layer_table_of_the_masks(mlp_app):
    ex = mlp_app.explorer.prune("lamp", sparsity=0.8)
    assert mlp_app.wait_idle()
    name, csv = mlp_app.layer_chart.export.payload("csv")
    assert name == "digits_mlp-allocation.csv"
    table = pd.read_csv(io.BytesIO(csv))
    masks = ex.masks
    assert list(table["layer"]) == ex.layers == mlp_app.layer_chart.source.data["layer"]
    assert list(table["kept_weights"]) == [int(masks[n].sum()) for n in ex.layers]  # counted here
    assert table["sparsity_pct"].tolist() == pytest.approx(mlp_app.layer_chart.source.data["sparsity_pct"])
    pdf = mlp_app.layer_chart.export.payload("pdf")[1]
    svg = mlp_app.layer_chart.export.payload("svg")[1]
    assert pdf.startswith(b"%PDF-") and b"<svg" in svg[:2000]


def test_mask_export_is_the_mask_shown(mlp_app):
    ex = mlp_app.explorer.prune("magnitude", sparsity=0.6)
    mlp_app.mask_view.layer_select.value = "fc2.weight"
    table = _csv(mlp_app.mask_view.export.payload("csv"))
    mask = ex.masks["fc2.weight"]
    assert set(table["layer"]) == {"fc2.weight"} and len(table) == mask.numel()
    image = torch.tensor(table["kept"].to_numpy()).reshape(mask.shape).bool()
    assert torch.equal(image, mask)
    assert torch.equal(image.to(torch.uint8), torch.tensor(mlp_app.mask_view.source.data["image"][0]))


def test_export_button_sends_the_chosen_format(mlp_app):
    menu = mlp_app.layer_chart.export
    menu.format.value = "csv"
    sent = _clicked(menu.download)
    assert menu.download.filename == "digits_mlp-allocation.csv"
    assert sent == menu.payload("csv")[1]
    expected = figure_data("allocation", mlp_app.explorer, quantity="sparsity")
    pd.testing.assert_frame_equal(pd.read_csv(io.BytesIO(sent)), expected, check_dtype=False)


def test_sensitivity_views_draw_and_export_the_sweep_without_sweeping_again(mlp_app, monkeypatch):
    methods, sparsities = ("magnitude", "lamp"), (0.0, 0.5, 0.9)
    monkeypatch.setattr(sensitivity_view, "measure_sensitivity", functools.partial(
        sensitivity_view.measure_sensitivity, methods=methods, sparsities=sparsities))
    view, ex = mlp_app.sensitivity, mlp_app.explorer
    assert view.method_export.download.disabled
    view.run()
    assert view.wait_idle(60)
    curves = _csv(view.method_export.payload("csv"))
    # the curve points are what a fresh explorer measures for each setting
    fresh = Explorer.from_sample("digits_mlp")
    for row in curves.itertuples():
        metrics = fresh.evaluate("torch", Setting(weights=fresh.weight_setting(row.method, row.target_sparsity_pct / 100)))
        assert row.accuracy_pct == pytest.approx(100 * metrics.accuracy)
    lamp = curves[curves["method"] == "lamp"]
    i = view.method_source.data["label"].index("LAMP")
    assert view.method_source.data["xs"][i] == pytest.approx(list(lamp["weight_sparsity_pct"]))
    assert view.method_source.data["ys"][i] == pytest.approx(list(lamp["accuracy_pct"]))
    layers = _csv(view.layer_export.payload("csv"))
    assert sorted(set(layers["layer"])) == sorted(ex.layers) and len(layers) == len(ex.layers) * len(sparsities)
    j = view.layer_source.data["label"].index("fc1.weight")
    fc1 = layers[layers["layer"] == "fc1.weight"]
    assert view.layer_source.data["ys"][j] == pytest.approx(list(fc1["accuracy_pct"]))

    def no_evaluation(*args, **kwargs):
        raise AssertionError("the export evaluated the model again")

    monkeypatch.setattr(ex, "evaluate", no_evaluation)
    assert view.method_export.payload("pdf")[1].startswith(b"%PDF-")
    # the figure data function (CLI, ex.figure) on the same sweep is a cache hit with the same table
    again = figure_data("sensitivity", ex, methods=methods, sparsities=sparsities)
    pd.testing.assert_frame_equal(again.reset_index(drop=True), curves, check_dtype=False)


def test_speed_export_uses_the_measured_report_and_never_times_again(mlp_app, monkeypatch):
    from prunescope.explorer.app import speed_view
    from concurrent.futures import Future

    ex = mlp_app.explorer.prune("magnitude", sparsity=0.9)
    done: Future = Future()
    done.set_result(None)
    monkeypatch.setattr(speed_view, "warmup_for", lambda backend: done)
    table = pd.DataFrame({  # a report as sparse_exec.benchmark returns it (numbers made up here)
        "layer": [*ex.layers, "model"], "format": ["csr"] * 3 + ["mixed"],
        "dense_ms": [1.0, 2.0, 0.5, 4.0], "sparse_ms": [0.5, 0.5, 1.0, 2.5],
        "measured_speedup": [2.0, 4.0, 0.5, 1.6], "flops_dense": [10, 20, 5, 35],
        "flops_effective": [1, 2, 1, 4], "theoretical_speedup": [10.0, 10.0, 5.0, 8.75],
    })
    calls = []

    def benchmark(batch_size, backend, repeats, setting, **kwargs):
        calls.append((batch_size, backend))
        return SpeedReport(table=table, batch_size=batch_size, backend=backend, setting=setting.weights)

    monkeypatch.setattr(ex, "benchmark", benchmark)
    view = mlp_app.speed
    assert view.export.download.disabled
    view.run()
    assert view.wait_idle(30) and len(calls) == 1 and not view.export.download.disabled
    exported = _csv(view.export.payload("csv"))
    measured = exported[exported["estimate"] == "measured"]
    assert list(measured["layer"]) == [*ex.layers, "whole model"]
    assert measured["speedup_x"].tolist() == table["measured_speedup"].tolist() == view.chart.source.data["measured"]
    theory = exported[exported["estimate"] == "theoretical"]["speedup_x"].tolist()
    assert theory == table["theoretical_speedup"].tolist() == view.chart.source.data["theoretical"]
    for fmt in ("pdf", "svg", "png"):
        assert view.export.payload(fmt)[1]
    assert len(calls) == 1  # exporting timed nothing
    report = view.reports["digits_mlp"]
    pd.testing.assert_frame_equal(speed_table("digits_mlp", report, view.repeats), exported, check_dtype=False)


# ------------------------------------------------------------------------------------ downloads
def test_masks_and_pruned_weights_downloads_reproduce_the_explorer(mlp_app):
    ex = mlp_app.explorer.prune("global_magnitude", sparsity=0.7)
    masks = masks_from_bytes(_clicked(mlp_app.files.masks_download))
    assert mlp_app.files.masks_download.filename == "digits_mlp-masks.safetensors"
    assert masks.keys() == ex.masks.keys() and all(torch.equal(masks[n], ex.masks[n]) for n in masks)
    state = st_load(pruned_weights_payload(ex))
    model = get_sample_model("digits_mlp").build().eval()
    model.load_state_dict(state)
    x, _ = ex.eval_data
    with torch.no_grad():  # the downloaded weights run in plain torch give the explorer's logits
        assert torch.allclose(model(x), ex.logits(), atol=1e-5)
    assert all(int((state[n] != 0).sum()) <= int(ex.masks[n].sum()) for n in ex.layers)


def test_recipe_save_then_load_restores_setting_and_metrics(mlp_app, close_app):
    ex = mlp_app.explorer.prune("lamp", sparsity=0.75).set_layer_sparsity("fc2.weight", 0.3)
    assert mlp_app.wait_idle()
    text = _clicked(mlp_app.files.recipe_save)
    assert text == recipe_payload(ex)
    other = ExplorerApp(model="digits_mlp")
    try:
        assert other.wait_idle()
        other.files.recipe_load.param.update(value=text, filename="r.json")
        assert other.wait_idle()
        assert other.explorer.setting == ex.setting and not other.alert.visible
        assert other.metrics.metrics.accuracy == ex.evaluate().accuracy
        other.files.recipe_load.param.update(value=b'{"format": "prunescope-recipe", "version": 99}', filename="bad.json")
        assert other.alert.visible and other.alert.alert_type == "danger" and "version" in other.alert.object
        assert other.explorer.setting == ex.setting  # unchanged
    finally:
        close_app(other)


def test_compacted_download_only_for_structured_settings_and_runs(mlp_app):
    files = mlp_app.files
    mlp_app.explorer.prune("magnitude", sparsity=0.5)
    assert files.compacted_download.disabled and "structured" in files.compacted_note.object
    with pytest.raises(ValueError, match="not structured"):
        compacted_payload(mlp_app.explorer)
    ex = mlp_app.explorer.prune("channel", sparsity=0.5)
    assert mlp_app.wait_idle()  # the channel trace ran on the session's worker (fx tracing is process-wide)
    assert not files.compacted_download.disabled
    archive = zipfile.ZipFile(io.BytesIO(compacted_payload(ex)))
    assert sorted(archive.namelist()) == ["README.txt", "compacted.pt2", "compacted.safetensors"]
    program = torch.export.load(io.BytesIO(archive.read("compacted.pt2"))).module()
    x, _ = ex.eval_data
    assert torch.allclose(program(x), ex.logits(), atol=1e-5)  # a smaller network, the same function
    state = st_load(archive.read("compacted.safetensors"))
    assert sum(v.numel() for v in state.values()) < sum(p.numel() for p in ex.model.parameters())
    assert state.keys() == ex.compacted_model().state_dict().keys()


# ------------------------------------------------------------------------------------ uploads
def _state_bytes(checkpoint: str) -> bytes:
    state = get_sample_model("digits_mlp").state_dict(checkpoint)
    return save({k: v.contiguous() for k, v in state.items()})


class _WritesFile:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_uploaded_weights_replace_this_sessions_explorer_only(mlp_app, close_app):
    other = ExplorerApp(model="digits_mlp")
    try:
        assert other.wait_idle()
        mlp_app.explorer.prune("magnitude", sparsity=0.5)
        assert mlp_app.wait_idle()
        before, theirs = mlp_app.explorer, other.explorer
        _upload(mlp_app, _state_bytes("early"), "early.safetensors")
        assert mlp_app.explorer is not before and mlp_app.explorer.setting == before.setting
        expected = Explorer.from_sample("digits_mlp", "early").prune("magnitude", sparsity=0.5).evaluate()
        assert mlp_app.metrics.metrics.accuracy == expected.accuracy != before.evaluate().accuracy
        assert "early.safetensors" in mlp_app.files.weights_note.object and not mlp_app.alert.visible
        assert other.explorer is theirs and other.explorer.checkpoint == "trained"
        # a recipe made on the shipped weights still applies here, with a warning saying what differs
        shipped = Explorer.from_sample("digits_mlp").prune("lamp", sparsity=0.6)
        mlp_app.files.recipe_load.param.update(value=recipe_payload(shipped), filename="trained.json")
        assert mlp_app.wait_idle() and mlp_app.explorer.setting == shipped.setting
        assert mlp_app.alert.visible and mlp_app.alert.alert_type == "warning"
        assert "other weights" in mlp_app.alert.object
        mlp_app.explorer.prune("magnitude", sparsity=0.5)
        assert mlp_app.wait_idle()
        # the other session uploads other weights; neither sees the other's
        _upload(other, _state_bytes("init"), "init.safetensors")
        init = Explorer.from_sample("digits_mlp", "init").evaluate()
        assert other.metrics.metrics.accuracy == init.accuracy
        assert mlp_app.metrics.metrics.accuracy == expected.accuracy
        assert mlp_app._entries["digits_mlp"].build().checkpoint == "trained"
    finally:
        close_app(other)


def test_bad_uploads_are_refused_and_the_session_keeps_working(tmp_path, close_app):
    app = ExplorerApp(model="digits_mlp", max_upload_bytes=300_000)
    try:
        assert app.wait_idle()
        kept = app.explorer
        good = get_sample_model("digits_mlp").state_dict("early")
        wrong = {k: (v[:, :-1] if v.dim() == 2 else v).contiguous() for k, v in good.items()}
        nan = {k: v.clone().contiguous() for k, v in good.items()}
        nan["fc1.weight"][0, 0] = float("nan")
        target = tmp_path / "pwned.txt"
        evil = pickle.dumps({"fc1.weight": _WritesFile(target)})
        cases = {
            "evil.pt": (evil, "pickled"),
            "wrong.safetensors": (save(wrong), "wrong shapes"),
            "nan.safetensors": (save(nan), "non-finite"),
            "cut.safetensors": (save(good)[:-100], "truncated"),
            "big.safetensors": (b"\0" * 400_000, "upload limit"),
        }
        for name, (data, message) in cases.items():
            _upload(app, data, name)
            assert app.alert.visible and message in app.alert.object, (name, app.alert.object)
            assert app.explorer is kept
        assert not target.exists()  # nothing uploaded was executed
        app.controls.sparsity.value = 0.6  # the session keeps working
        assert app.wait_idle()
        assert not app.alert.visible
        assert app.metrics.metrics.accuracy == kept.evaluate().accuracy
    finally:
        close_app(app)


def test_curves_and_speed_measured_on_old_weights_are_not_shown_for_new_ones(mlp_app):
    view = mlp_app.sensitivity
    view.results["digits_mlp"] = view.results.get("digits_mlp") or object()
    view._measured_on["digits_mlp"] = object()  # measured on other weights
    view.tables.setdefault("digits_mlp", (pd.DataFrame(), pd.DataFrame()))
    view.set_explorer(mlp_app.explorer)
    assert "digits_mlp" not in view.results and view.method_source.data["xs"] == []
    assert view.method_export.download.disabled
    with pytest.raises(ValueError, match="run the sensitivity sweep first"):
        view.method_export.table()
