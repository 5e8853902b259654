"""The Geometry tab: drawn data equals the engine's (scatter = embedding, no move at sparsity 0, flip
colours = dense vs pruned correctness, CKA chart = explorer_cka, histograms = numpy), the UMAP fit
runs as a job, exports hold the drawn tables, bad input shows the alert and the app keeps running."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prunescope.explorer.app import ExplorerApp
from prunescope.explorer.core.setting import DENSE, Setting
from prunescope.explorer.geometry import facade
from prunescope.explorer.geometry.embedding import Embedding, fit_embedding
from prunescope.explorer.geometry.facade import explorer_cka, explorer_embedding, explorer_geometry
from prunescope.explorer.geometry.figures import FLIP_COLOURS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def geo_app(close_app, one_torch_thread):
    app = ExplorerApp(model="digits_mlp")
    app.tabs.active = app.tabs._names.index("Geometry")
    settle(app)
    yield app
    assert app.geometry.wait_idle()
    close_app(app)


def settle(app: ExplorerApp) -> None:
    assert app.wait_idle(60) and app.geometry.wait_idle(120)


def prune(app: ExplorerApp, method: str, sparsity: float) -> None:
    app.explorer.prune(method, sparsity=sparsity)
    settle(app)


def test_tab_is_registered_and_draws_the_pca_frame(geo_app):
    view, ex = geo_app.geometry, geo_app.explorer
    assert ("Geometry", view) in geo_app.extra_tabs and geo_app.active_tab == "Geometry"
    prune(geo_app, "magnitude", 0.8)
    data = view.scatter.source.data
    emb = explorer_embedding(ex, method="pca")
    np.testing.assert_array_equal(data["x_dense"], emb.dense[:, 0])
    np.testing.assert_array_equal(data["y_pruned"], emb.pruned[:, 1])
    assert len(data["thumb"]) == 539 and data["thumb"][0].startswith("data:image/png;base64,")
    assert not geo_app.alert.visible and view.embedding_export.download.disabled is False


def test_at_sparsity_zero_no_point_moves(geo_app):
    prune(geo_app, "magnitude", 0.0)
    data = geo_app.geometry.scatter.source.data
    np.testing.assert_array_equal(data["x_pruned"], data["x_dense"])
    np.testing.assert_array_equal(data["y_pruned"], data["y_dense"])
    assert set(data["flip"]) <= {"stayed_correct", "stayed_wrong"}


def test_flip_colours_are_dense_vs_pruned_correctness(geo_app):
    view, ex = geo_app.geometry, geo_app.explorer
    view.colour.value = "flip"
    prune(geo_app, "random", 0.7)
    y = ex.eval_data[1]
    dense_ok = (ex.logits(DENSE).argmax(1) == y).numpy()
    pruned_ok = (ex.logits().argmax(1) == y).numpy()
    expected = np.where(dense_ok & pruned_ok, FLIP_COLOURS["stayed_correct"],
                        np.where(dense_ok, FLIP_COLOURS["became_wrong"],
                                 np.where(pruned_ok, FLIP_COLOURS["became_right"], FLIP_COLOURS["stayed_wrong"])))
    assert list(view.scatter.source.data["colour"]) == list(expected)
    assert (~pruned_ok & dense_ok).sum() > 0
    assert f"became wrong: {int((~pruned_ok & dense_ok).sum())}" in view.scatter_note.object


def test_class_colouring_and_hover_names(geo_app):
    view = geo_app.geometry
    view.colour.value = "class"
    settle(geo_app)
    data = view.scatter.source.data
    labels = geo_app.explorer.eval_data[1].numpy()
    assert [g for g in data["group"]] == [f"class {v}" for v in labels]
    assert list(data["label_name"]) == [str(v) for v in labels]
    view.colour.value = "flip"
    settle(geo_app)


def test_cka_chart_equals_explorer_cka(geo_app):
    view, ex = geo_app.geometry, geo_app.explorer
    prune(geo_app, "lamp", 0.9)
    expected = explorer_cka(ex, matrix=False).by_layer
    assert list(view.cka_chart.source.data["layer"]) == list(expected["layer"]) == ["fc1", "fc2", "fc3"]
    np.testing.assert_array_equal(view.cka_chart.source.data["cka"], expected["cka"].to_numpy())
    view.show_matrix.value = True
    settle(geo_app)
    grid = explorer_cka(ex).matrix
    cells = dict(zip(zip(view.cka_matrix.source.data["row"], view.cka_matrix.source.data["col"]),
                     view.cka_matrix.source.data["cka"]))
    assert cells[("fc1", "fc3")] == grid.loc["fc1", "fc3"] and view.cka_matrix.figure.visible
    view.show_matrix.value = False
    settle(geo_app)


def test_histograms_count_the_geometry(geo_app):
    view, ex = geo_app.geometry, geo_app.explorer
    view.corruption.value, view.severity.value = "contrast", 2
    prune(geo_app, "magnitude", 0.6)
    table = view.hist
    assert set(table["condition"]) == {"clean", "contrast 2"}
    for model, condition, corruption in (("pruned", "clean", None), ("dense", "contrast 2", "contrast")):
        values = explorer_geometry(ex, None, corruption, 2 if corruption else 0)[f"{model}_margin"].to_numpy()
        rows = table[(table["quantity"] == "margin") & (table["model"] == model) & (table["condition"] == condition)]
        edges = np.append(rows["bin_left"].to_numpy(), rows["bin_right"].iloc[-1])
        np.testing.assert_array_equal(rows["count"].to_numpy(), np.histogram(values, edges)[0])
    slot = 1  # (pruned, clean) in the margin panel: a staircase of the percentages
    ys = view.histograms.sources[("margin", slot)].data["y"]
    clean = table[(table["quantity"] == "margin") & (table["series"] == "pruned, clean")]
    np.testing.assert_allclose(ys[1:-1:2], 100 * clean["fraction"].to_numpy())
    view.corruption.value = "none"
    settle(geo_app)
    assert set(view.hist["condition"]) == {"clean"}


def test_fragile_gallery_and_pinning(geo_app):
    view = geo_app.geometry
    prune(geo_app, "magnitude", 0.85)
    top = view.fragile
    assert (top["flip"].iloc[0] == "became_wrong") and f"#{int(top['sample'].iloc[0])}</b>" in view.fragile_html.object
    view.scatter.source.selected.indices = [7]  # a tap on the scatter
    assert view.pinned == int(view.scatter.source.data["sample"][7]) == 7
    row = view.embedding.iloc[7]
    assert view.scatter.pinned.data["x"] == [row["x_dense"], row["x_pruned"]]
    assert "Sample #7" in view.pin_card.object and "<img" in view.pin_card.object
    view.pin_input.value = 9
    assert view.pinned == 9 and "Sample #9" in view.pin_card.object
    view.pin(10_000)
    assert geo_app.alert.visible and "sample must be in 0..538" in geo_app.alert.object and view.pinned == 9


def test_exports_hold_the_drawn_tables(geo_app):
    view = geo_app.geometry
    name, content = view.embedding_export.payload("csv")
    assert name == "digits_mlp-embedding.csv" and content == view.embedding.to_csv(index=False).encode()
    assert view.cka_export.payload("pdf")[1].startswith(b"%PDF")
    assert view.hist_export.payload("csv")[1] == view.hist.to_csv(index=False).encode()


def test_unknown_layer_shows_the_alert_and_the_app_keeps_running(geo_app):
    view = geo_app.geometry
    view.layer.value = "nope"
    settle(geo_app)
    assert geo_app.alert.visible and "unknown layer 'nope'; known modules: fc1, fc2, fc3" in geo_app.alert.object
    view.layer.value = "fc2"
    prune(geo_app, "magnitude", 0.5)
    assert not geo_app.alert.visible and view.embedding.attrs["layer"] == "fc2"
    np.testing.assert_array_equal(view.scatter.source.data["x_pruned"], explorer_embedding(
        geo_app.explorer, "fc2", "pca").pruned[:, 0])
    assert geo_app.explorer.evaluate().accuracy > 0.5  # the session still measures
    view.layer.value = view.layer.options[0]
    settle(geo_app)


def test_only_the_visible_tab_computes(geo_app):
    view = geo_app.geometry
    before = view.embedding
    geo_app.tabs.active = geo_app.tabs._names.index("Pruning")
    prune(geo_app, "magnitude", 0.3)
    assert view.embedding is before
    geo_app.tabs.active = geo_app.tabs._names.index("Geometry")
    settle(geo_app)
    assert view.embedding is not before and view.embedding.attrs["setting"].endswith("sparsity 0.3")


def test_umap_fit_runs_as_a_job(geo_app, monkeypatch):
    """The UMAP path with a quick stand-in fit (the real one JIT-compiles for a minute; tested in
    tests/explorer/geometry/test_embedding.py)."""
    calls = []

    def fake(features, method="umap", progress=None, cancel=None, **kwargs):
        if method == "pca":
            return fit_embedding(features, "pca")
        calls.append(method)
        for step in range(4):
            if progress is not None:
                progress(step, 3)
        pca = fit_embedding(features, "pca")
        return Embedding("umap", pca.positions, pca.reference, "fake", False, {})

    monkeypatch.setattr(facade, "fit_embedding", fake)
    view = geo_app.geometry
    view.layer.value = "fc1"
    view.method.value = "umap"
    settle(geo_app)
    assert calls == ["umap"] and not view.fit_job.running
    assert view.embedding.attrs["method"] == "umap" and "UMAP frame fitted" in view.scatter_note.object
    prune(geo_app, "magnitude", 0.0)
    data = view.scatter.source.data
    np.testing.assert_array_equal(data["x_pruned"], data["x_dense"])  # neighbour placement: exact at 0
    view.method.value = "pca"
    view.layer.value = view.layer.options[0]
    settle(geo_app)


def test_comparison_job_against_the_engine(geo_app):
    view, ex = geo_app.geometry, geo_app.explorer
    prune(geo_app, "magnitude", 0.7)
    view.compare.methods.value = ["magnitude", "random"]
    view.compare.corruptions.value = ["blur"]
    view.compare.severities.value = ["2"]
    assert view.compare.run()
    settle(geo_app)
    table = view.compare.table
    assert list(table["setting"]) == ["magnitude", "magnitude", "random", "random"]
    clean = table[(table["setting"] == "random") & (table["corruption"] == "clean")]
    random = ex.weight_setting("random", 0.7)
    assert float(clean["accuracy"].iloc[0]) == ex.evaluate(setting=Setting(weights=random)).accuracy
    assert view.compare.export.payload("csv")[1] == table.to_csv(index=False).encode()
    assert "random" in view.compare.pane.object["setting"].tolist()
    view.compare.methods.value = []
    assert not view.compare.run() and "pick 1 to 4 methods" in geo_app.alert.object


def test_vit_geometry_with_a_token_budget(make_app, monkeypatch):
    """The tab follows weights and tokens together on a ViT (96 test images)."""
    from prunescope.sample_models import get_sample_model

    def small(name):
        from prunescope.explorer import Explorer

        spec = get_sample_model(name)
        model = spec.load() if spec.checkpoint_path("trained").is_file() else spec.build().eval()
        x, y = spec.data("test")
        ex = Explorer(model, data=(x[:96], y[:96]), weights=list(spec.prunable_weights), name=name)
        ex.sample = spec
        return ex

    monkeypatch.setattr(ExplorerApp, "_build_explorer", staticmethod(small))
    app = make_app("shapes_vit")
    app.tabs.active = app.tabs._names.index("Geometry")
    app.explorer.set_token_budget(0.5, strategy="cls_attention")
    settle(app)
    view, ex = app.geometry, app.explorer
    assert not app.alert.visible, app.alert.object
    assert view.embedding.attrs["layer"] == "head:input"
    torch.testing.assert_close(torch.as_tensor(view.scatter.source.data["x_pruned"]),
                               torch.as_tensor(explorer_embedding(ex, method="pca").pruned[:, 0]))
    assert view.scatter.source.data["thumb"][0].startswith("data:image/png")
    assert float(view.embedding["x_pruned"].sub(view.embedding["x_dense"]).abs().max()) > 0
    assert len(view.cka) == len(facade.cka_layers(ex))
