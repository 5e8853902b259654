"""The sidebar writes the engine state and shows it back; bad input gives an alert, never a crash."""

from __future__ import annotations

import pytest

from prunescope.explorer.app import ExplorerApp
from prunescope.explorer.pruning import METHODS


def test_method_select_lists_display_names(app):
    assert app.controls.method.options == {m.display_name: name for name, m in METHODS.items()}


def test_global_slider_prunes_and_layer_sliders_show_achieved_sparsity(app):
    app.controls.method.value = "lamp"
    app.controls.sparsity.value = 0.8
    state = app.explorer.state
    assert (state.method, state.sparsity, state.layer_sparsity) == ("lamp", 0.8, {})
    achieved = app.explorer.layer_sparsities()
    assert {n: s.value for n, s in app.controls.layer_sliders.items()} == pytest.approx(achieved)
    assert len(set(round(v, 3) for v in achieved.values())) > 1  # LAMP allocates unevenly


def test_layer_slider_sets_that_layer_by_hand(app):
    app.controls.sparsity.value = 0.6
    app.controls.layer_sliders["fc2"].value = 0.25
    assert app.explorer.state.layer_sparsity == {"fc2": 0.25}
    assert app.explorer.layer_sparsities()["fc2"] == pytest.approx(0.25, abs=1e-3)
    assert app.controls.layer_sliders["fc2"].label == "fc2 · set by hand"
    assert app.controls.layer_sliders["fc1"].value == pytest.approx(0.6, abs=1e-6)
    app.controls.sparsity.value = 0.7  # a global change clears hand-set layers
    assert app.explorer.state.layer_sparsity == {}
    assert app.controls.layer_sliders["fc2"].label == "fc2"


def test_nm_shows_n_and_m_and_fixes_the_sparsity(app):
    app.controls.method.value = "nm"
    c = app.controls
    assert c.nm_row.visible and not c.norm.visible and c.sparsity.disabled
    assert app.explorer.state.sparsity == 0.5
    c.m.value = 8
    assert (app.explorer.state.n, app.explorer.state.m, app.explorer.state.sparsity) == (2, 8, 0.75)
    assert c.sparsity.value == 0.75
    assert all(s.end == pytest.approx(0.75) and s.step == pytest.approx(0.75) for s in c.layer_sliders.values())


def test_channel_shows_norm_and_channel_fractions(app):
    app.controls.method.value = "channel"
    app.controls.sparsity.value = 0.5
    c = app.controls
    assert c.norm.visible and not c.nm_row.visible
    c.norm.value = "l2"
    assert app.explorer.state.norm == "l2"
    values = {n: s.value for n, s in c.layer_sliders.items()}
    assert values == {"fc1": 0.5, "fc2": 0.5, "fc3": 0.0}  # outputs of the last layer stay
    assert c.layer_sliders["fc3"].disabled
    weight_sparsity = app.explorer.layer_sparsities()
    assert weight_sparsity["fc2"] == pytest.approx(0.75)  # its rows and its inputs from fc1 go


def test_skip_first_last_and_seed_reach_the_state(app):
    app.controls.method.value = "random"
    app.controls.sparsity.value = 0.5
    app.controls.skip_first_last.value = True
    app.controls.seed.value = 7
    s = app.explorer.state
    assert (s.skip_first_last, s.seed) == (True, 7)
    assert app.explorer.layer_sparsities()["fc1"] == 0.0


def test_bad_input_shows_an_alert_and_the_widgets_return_to_the_state(app):
    app.controls.method.value = "nm"
    app.controls.n.value = 4  # n must be < m = 4
    assert app.alert.visible and "n < m" in app.alert.object and "n=4" in app.alert.object
    assert app.explorer.state.n == 2 and app.controls.n.value == 2
    app.controls.m.value = 8  # a valid change hides the alert
    assert not app.alert.visible


def test_state_changes_from_python_show_in_the_sidebar(app):
    app.explorer.prune("snip", sparsity=0.3, seed=3)
    c = app.controls
    assert (c.method.value, c.sparsity.value, c.seed.value) == ("snip", 0.3, 3)
    assert "calibration" in c.description.object


def test_switching_model_builds_its_explorer_with_the_same_settings(app):
    app.controls.method.value = "lamp"
    app.controls.sparsity.value = 0.8
    mlp = app.explorer
    app.controls.model.value = "digits_cnn"
    cnn = app.explorer
    assert cnn is not mlp and cnn.name == "digits_cnn"
    assert list(app.controls.layer_sliders) == ["conv1", "conv2", "fc1", "fc2"]
    assert (cnn.state.method, cnn.state.sparsity) == ("lamp", 0.8)
    assert app.mask_view.layer_select.options == cnn.layers
    assert app.wait_idle() and app.metrics.metrics.accuracy == cnn.evaluate().accuracy
    app.controls.model.value = "digits_mlp"
    assert app.explorer is mlp  # kept for the session


def test_sessions_do_not_share_state(close_app):
    first, second = ExplorerApp(), ExplorerApp()
    try:
        first.controls.sparsity.value = 0.9
        assert second.explorer is not first.explorer
        assert second.explorer.state.sparsity == 0.0 and second.controls.sparsity.value == 0.0
    finally:
        close_app(first)
        close_app(second)


def test_unknown_model_is_rejected_with_the_known_ones():
    with pytest.raises(ValueError, match="digits_cnn"):
        ExplorerApp(model="resnet9000")


def test_nm_note_names_the_layers_that_stay_dense(make_app):
    app = make_app("digits_cnn")
    app.explorer.prune("nm", n=2, m=4)
    assert "kept dense: conv1." in app.controls.layer_note.object  # 1 x 3 x 3 = 9 inputs
    app.explorer.prune("nm", n=1, m=8)
    assert "kept dense: conv1." in app.controls.layer_note.object
    app.explorer.prune("lamp", sparsity=0.5)
    assert "dense" not in app.controls.layer_note.object
