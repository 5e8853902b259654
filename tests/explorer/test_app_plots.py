"""The per-layer sparsity bars and the mask image draw exactly what the engine computed."""

from __future__ import annotations

import numpy as np
import pytest

from prunescope.explorer.app import ExplorerApp
from prunescope.explorer.app.palette import GLOBAL_BAR, HAND_BAR
from prunescope.explorer.app.plots import GLOBAL_LABEL, HAND_LABEL
from prunescope.explorer.viewmodel import percent

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def app(make_app):
    return make_app("digits_cnn")


def test_bars_show_the_per_layer_cost_table(app):
    app.explorer.prune("lamp", sparsity=0.8)
    assert app.wait_idle()
    table = app.explorer.cost().per_layer
    data = app.layer_chart.source.data
    assert data["layer"] == list(table["layer"]) == app.explorer.layers
    assert list(app.layer_chart.figure.x_range.factors) == app.explorer.layers
    assert data["sparsity_pct"] == pytest.approx([100 * s for s in table["sparsity"]])
    assert data["kept"] == list(table["kept"]) and data["flops_effective"] == list(table["flops_effective"])
    assert data["color"] == [GLOBAL_BAR] * 4 and data["origin"] == [GLOBAL_LABEL] * 4
    assert data["label"] == [percent(s) for s in table["sparsity"]]


def test_hand_set_layers_get_their_own_colour(app):
    app.explorer.prune("magnitude", sparsity=0.5).set_layer_sparsity("conv2", 0.9)
    assert app.wait_idle()
    data = app.layer_chart.source.data
    assert data["sparsity_pct"][1] == pytest.approx(90.0, abs=0.1)
    assert data["color"] == [GLOBAL_BAR, HAND_BAR, GLOBAL_BAR, GLOBAL_BAR]
    assert data["origin"][1] == HAND_LABEL


def test_axes_are_labelled_with_units(app):
    for fig in (app.layer_chart.figure, app.mask_view.figure):
        assert fig.xaxis.axis_label and fig.yaxis.axis_label
    assert "%" in app.layer_chart.figure.yaxis.axis_label


@pytest.mark.parametrize("layer", ["conv2.weight", "fc1.weight"])
def test_mask_image_is_the_layer_mask_as_out_by_rest(app, layer):
    app.explorer.prune("global_magnitude", sparsity=0.7)
    assert app.wait_idle()
    app.mask_view.layer_select.value = layer
    mask = app.explorer.masks[layer]
    image = app.mask_view.source.data["image"][0]
    expected = mask.reshape(mask.shape[0], -1).numpy().astype(np.uint8)
    np.testing.assert_array_equal(image, expected)
    assert app.mask_view.source.data["dw"] == [expected.shape[1]]
    assert app.mask_view.source.data["dh"] == [expected.shape[0]]
    kept = int(mask.sum())
    assert f"{kept:,} of {mask.numel():,} weights kept" in app.mask_view.figure.title.text
    assert (app.mask_view.figure.y_range.start, app.mask_view.figure.y_range.end) == (expected.shape[0], 0)


def test_mask_follows_slider_moves(app):
    app.mask_view.layer_select.value = "fc1.weight"
    app.controls.sparsity.value = 0.3
    assert app.mask_view.source.data["image"][0].mean() == pytest.approx(0.7, abs=1e-3)
    app.controls.layer_sliders["fc1.weight"].value = 0.9
    assert app.mask_view.source.data["image"][0].mean() == pytest.approx(0.1, abs=1e-3)
    assert "input" in app.mask_view.figure.xaxis.axis_label.lower()
