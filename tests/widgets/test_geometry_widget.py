"""The widget's geometry box: it draws the engine's embedding and CKA, follows the state, computes
only while open, and shows bad input in its error line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prunescope.explorer import Explorer
from prunescope.explorer.core.setting import DENSE
from prunescope.explorer.geometry.facade import explorer_cka, explorer_embedding
from prunescope.widgets import ExplorerWidget
from prunescope.widgets.geometry_widget import TITLE, GeometryBox

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def ex() -> Explorer:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Explorer.from_sample("digits_mlp")
    torch.set_num_threads(before)


def test_explorer_widget_holds_a_closed_geometry_box(ex):
    ex.prune("magnitude", sparsity=0.0)
    w = ExplorerWidget(ex)
    try:
        box = w.geometry.children[0]
        assert isinstance(box, GeometryBox) and w.geometry.titles == (TITLE,) and w.geometry.selected_index is None
        assert box.table is None and bytes(box.picture.value) == b""  # closed: nothing computed
        w.geometry.selected_index = 0
        assert box.active and bytes(box.picture.value).startswith(PNG)
        w.sparsity.value = 0.8  # the widget's slider: the open box follows the state
        emb = explorer_embedding(ex, method="pca")
        np.testing.assert_array_equal(box.table["x_pruned"], emb.pruned[:, 0])
        assert box.table.attrs["setting"].endswith("magnitude at sparsity 0.8")
    finally:
        w.close()


def test_box_draws_the_engine_values(ex):
    ex.prune("random", sparsity=0.6)
    box = GeometryBox(ex)
    try:
        emb = explorer_embedding(ex, method="pca")
        np.testing.assert_array_equal(box.table[["x_dense", "y_dense"]].to_numpy(), emb.dense)
        cka = explorer_cka(ex, matrix=False).by_layer
        assert list(box.cka["cka"]) == list(cka["cka"])
        for row in cka.itertuples():
            assert f"<td>{row.layer}</td><td style='text-align:right'>{row.cka:.4f}</td>" in box.cka_html.value
        y = ex.eval_data[1]
        became_wrong = int(((ex.logits(DENSE).argmax(1) == y) & (ex.logits().argmax(1) != y)).sum())
        assert f"became wrong: {became_wrong}" in box.note.value and became_wrong > 0
        ex.prune("random", sparsity=0.0)
        np.testing.assert_array_equal(box.table["x_pruned"], box.table["x_dense"])
        assert set(box.cka["cka"].round(12)) == {1.0}
    finally:
        box.close()


def test_bad_input_goes_to_the_error_line(ex, monkeypatch):
    box = GeometryBox(ex)
    try:
        import prunescope.widgets.geometry_widget as module

        def refuse(*args, **kwargs):
            raise ValueError("UMAP with n_neighbors=15 needs 2 <= n_neighbors < samples, got 9 samples")

        monkeypatch.setattr(module, "embedding_table", refuse)
        before = box.table
        box.method.value = "umap"
        assert "n_neighbors=15" in box.error_html.value and box.table is before
        monkeypatch.undo()
        box.method.value = "pca"
        assert box.error is None and box.table is not None
    finally:
        box.close()
