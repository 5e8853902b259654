"""The sidebar writes the engine state and shows it back (through the view model); bad input gives
an alert naming the refused value, the widgets return to the state, never a crash."""

from __future__ import annotations

import re

import param
import pytest

from prunescope.explorer.app import ExplorerApp
from prunescope.explorer.app.controls import GLOBAL
from prunescope.explorer.pruning import METHODS, get_method
from prunescope.explorer.viewmodel import view_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def choose(app, method: str) -> None:
    """Pick ``method`` in the select and wait: a criterion's first scores are computed on the worker."""
    app.controls.method.value = method
    assert app.wait_idle()


def test_method_select_lists_the_view_models_methods(app):
    offered = view_model(app.explorer).methods
    assert app.controls.method.options == offered
    selectable = {m.display_name: name for name, m in METHODS.items() if getattr(m, "selectable", True)}
    assert offered == selectable and {"lamp", "nm", "channel", "uniform_plus"} <= set(offered.values())


def test_global_slider_prunes_and_layer_sliders_show_achieved_sparsity(app):
    choose(app, "lamp")
    app.controls.sparsity.value = 0.8
    assert app.wait_idle()
    w = app.explorer.setting.weights
    assert (w.method, w.sparsity, w.overrides) == ("lamp", 0.8, ())
    achieved = app.explorer.layer_sparsities()
    assert {n: s.value for n, s in app.controls.layer_sliders.items()} == pytest.approx(achieved)
    assert len(set(round(v, 3) for v in achieved.values())) > 1  # LAMP allocates unevenly
    assert app.controls.sparsity.name == get_method("lamp").sparsity_label


def test_layer_slider_sets_that_weight_by_hand(app):
    app.controls.sparsity.value = 0.6
    app.controls.layer_sliders["fc2.weight"].value = 0.25
    assert app.explorer.setting.weights.overrides == (("fc2.weight", 0.25),)
    assert app.explorer.layer_sparsities()["fc2.weight"] == pytest.approx(0.25, abs=1e-3)
    assert app.controls.layer_sliders["fc2.weight"].name == "fc2.weight · set by hand"
    assert app.controls.layer_sliders["fc1.weight"].value == pytest.approx(0.6, abs=1e-6)
    app.controls.sparsity.value = 0.7  # a global change clears hand-set weights
    assert app.explorer.setting.weights.overrides == ()
    assert app.controls.layer_sliders["fc2.weight"].name == "fc2.weight"
    assert app.wait_idle()


def test_a_key_press_on_a_layer_slider_is_applied(app):
    """A key press changes value and value_throttled in one batch (it crashed the callback)."""
    slider = app.controls.layer_sliders["fc1.weight"]
    with param.edit_constant(slider):  # as Bokeh's property sync does
        slider.param.update(value=0.3, value_throttled=0.3)
    assert not app.alert.visible
    assert app.explorer.setting.weights.overrides == (("fc1.weight", 0.3),)
    assert app.wait_idle()
    assert app.metrics.metrics.accuracy == app.explorer.evaluate().accuracy and not app.metrics.metrics.estimate


def test_nm_shows_its_options_and_fixes_the_sparsity(app):
    choose(app, "nm")
    c = app.controls
    assert list(c.option_widgets) == ["m", "n"] or list(c.option_widgets) == ["n", "m"]
    assert c.sparsity.disabled and not c.seed.visible
    assert app.explorer.setting.weights.sparsity == 0.5
    c.option_widgets["m"].value = 8
    assert app.wait_idle()
    w = app.explorer.setting.weights
    assert (w.option("n"), w.option("m"), w.sparsity) == (2, 8, 0.75)
    assert c.sparsity.value == 0.75
    assert all(s.end == pytest.approx(0.75) and s.step == pytest.approx(0.75) for s in c.layer_sliders.values())


def test_nm_per_weight_sliders_follow_a_move_within_their_coarse_step(app):
    """1:4 -> 1:8 moves every weight from 75 % to 87.5 %: less than half of the old 75 % step, and
    still the sliders must show it (they once kept 75 % while the weights were 87.5 % sparse)."""
    choose(app, "nm")
    c = app.controls
    c.option_widgets["n"].value = 1
    assert app.wait_idle()
    before = {name: s.value for name, s in c.layer_sliders.items()}
    c.option_widgets["m"].value = 8
    assert app.wait_idle()
    cost = app.explorer.cost().per_layer.set_index("layer")["sparsity"]
    assert any(v == pytest.approx(0.75) for v in before.values()), before
    assert any(cost[name] == pytest.approx(0.875) for name in before), cost
    for name, slider in c.layer_sliders.items():
        assert slider.value == pytest.approx(cost[name], abs=1e-3)


def test_choosing_nm_and_back_restores_the_free_sparsity(app):
    """N:M fixes the sparsity; the next method starts at the sparsity the user chose, not N:M's."""
    choose(app, "lamp")
    app.controls.sparsity.value = 0.9
    choose(app, "nm")
    assert app.controls.sparsity.value == 0.5
    choose(app, "erk")
    assert app.explorer.setting.weights.sparsity == 0.9 and app.controls.sparsity.value == 0.9


def test_channel_shows_norm_and_channel_fractions(app):
    choose(app, "channel")
    app.controls.sparsity.value = 0.5
    c = app.controls
    assert list(c.option_widgets) == ["norm"] and not c.seed.visible
    c.option_widgets["norm"].value = "l2"
    assert app.wait_idle()
    assert app.explorer.setting.weights.option("norm") == "l2" and app.explorer.setting.weights.sparsity == 0.5
    values = {n: s.value for n, s in c.layer_sliders.items()}
    assert values == {"fc1.weight": 0.5, "fc2.weight": 0.5, "fc3.weight": 0.0}  # outputs of the last layer stay
    assert c.layer_sliders["fc3.weight"].disabled and "fc3.weight" in c.layer_note.object
    assert app.explorer.layer_sparsities()["fc2.weight"] == pytest.approx(0.75)  # its rows and its inputs from fc1 go


def test_seed_reaches_the_state_only_for_seeded_methods(app):
    choose(app, "random")
    app.controls.sparsity.value = 0.5
    assert app.controls.seed.visible
    app.controls.seed.value = 7
    assert app.wait_idle()
    assert app.explorer.setting.weights.seed == 7
    choose(app, "lamp")
    assert not app.controls.seed.visible and app.explorer.setting.weights.seed == 0


@pytest.mark.parametrize("widget, value, message", [
    ("n", 4, "n < m.*n=4"),
    ("seed", -1, r"seed.*-1"),
    ("seed", 2**70, "seed.*1180591620717411303424"),
])
def test_bad_input_shows_an_alert_naming_it_and_the_widgets_return_to_the_state(app, widget, value, message):
    """The issue's odd inputs (N=M, seed -1, a huge seed): an alert names the refused value and the
    field shows the state again. (A ValueError escaping the callback is a server traceback.)"""
    choose(app, "random" if widget == "seed" else "nm")
    before = app.explorer.setting
    control = app.controls.seed if widget == "seed" else app.controls.option_widgets[widget]
    shown = control.value
    control.value = value
    assert app.alert.visible and re.search(message, app.alert.object), app.alert.object
    assert "Overflow" not in app.alert.object
    assert app.explorer.setting == before and control.value == shown
    app.controls.sparsity.value = 0.6 if widget == "seed" else app.controls.sparsity.value
    if widget == "n":
        app.controls.option_widgets["m"].value = 8  # a valid change hides the alert
    assert app.wait_idle()
    assert not app.alert.visible


def test_state_changes_from_python_show_in_the_sidebar(app):
    app.explorer.prune("snip", sparsity=0.3, seed=3)
    assert app.wait_idle()
    c = app.controls
    assert (c.method.value, c.sparsity.value, c.seed.value, c.seed.visible) == ("snip", 0.3, 3, True)
    assert c.description.object == get_method("snip").description and "calibration" in c.description.object
    assert c.achieved.object == view_model(app.explorer).achieved


def test_switching_model_builds_its_explorer_with_the_same_settings(app):
    choose(app, "lamp")
    app.controls.sparsity.value = 0.8
    mlp = app.explorer
    app.controls.model.value = "digits_cnn"
    assert app.wait_idle()
    cnn = app.explorer
    assert cnn is not mlp and cnn.name == "digits_cnn"
    assert list(app.controls.layer_sliders) == ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"]
    assert (cnn.setting.weights.method, cnn.setting.weights.sparsity) == ("lamp", 0.8)
    assert app.mask_view.layer_select.options == cnn.layers
    assert app.metrics.metrics.accuracy == cnn.evaluate().accuracy
    app.controls.model.value = "digits_mlp"
    assert app.explorer is mlp  # kept for the session
    assert app.wait_idle()


def test_sessions_do_not_share_state(close_app):
    first, second = ExplorerApp(), ExplorerApp()
    try:
        first.controls.sparsity.value = 0.9
        assert second.explorer is not first.explorer
        assert second.explorer.setting.weights.sparsity == 0.0 and second.controls.sparsity.value == 0.0
    finally:
        close_app(first)
        close_app(second)


def test_unknown_model_is_rejected_with_the_known_ones():
    with pytest.raises(ValueError, match="digits_cnn"):
        ExplorerApp(model="resnet9000")


def test_nm_note_names_the_weights_that_stay_dense(make_app):
    app = make_app("digits_cnn")
    app.explorer.prune("nm", n=2, m=4)
    assert app.wait_idle()
    assert "Kept dense (input size not a multiple of the group): conv1.weight." in app.controls.layer_note.object
    app.explorer.prune("nm", n=1, m=8)
    assert app.wait_idle()
    assert "conv1.weight" in app.controls.layer_note.object
    app.explorer.prune("lamp", sparsity=0.5)
    assert app.wait_idle()
    assert "dense" not in app.controls.layer_note.object


def test_a_per_weight_value_drawn_lately_is_an_echo_a_step_away_is_a_move(app):
    """The notebook echo filter: after the state moved every weight to 60 %, a page sending back
    60.00000001 % (snapped) or the 40 % drawn before it is an echo; 61 % is a user's move."""
    c = app.controls
    c.sparsity.value = 0.4
    assert app.wait_idle()
    c.sparsity.value = 0.6
    assert app.wait_idle()
    layer = next(iter(c.layer_sliders))
    assert c.layer_sliders[layer].value == pytest.approx(0.6)
    assert c.is_echo(layer, 0.6000000001) and c.is_echo(layer, 0.4)
    assert not c.is_echo(layer, 0.61) and not c.is_echo(layer, 0.5)
    assert not c.is_echo("no.such.weight", 0.6)


def test_the_global_slider_keeps_an_echo_record_too(app, monkeypatch):
    """A change made from code draws the global slider: an older draw sent back is an echo, a step
    away is a move; in a notebook kernel the app drops such an echo and keeps the state."""
    c = app.controls
    app.explorer.prune(c.method.value, sparsity=0.4)
    assert app.wait_idle()
    app.explorer.prune(c.method.value, sparsity=0.6)
    assert app.wait_idle()
    assert c.sparsity.value == pytest.approx(0.6)
    assert c.is_echo(GLOBAL, 0.4) and c.is_echo(GLOBAL, 0.6000000001)
    assert not c.is_echo(GLOBAL, 0.5)
    monkeypatch.setattr(type(app._dispatch), "in_kernel", property(lambda self: True))
    c.sparsity.value = 0.4  # the page's late echo of the 40 % draw
    assert app.wait_idle()
    assert app.explorer.setting.weights.sparsity == pytest.approx(0.6)
    assert c.sparsity.value == pytest.approx(0.6)
    c.sparsity.value = 0.5  # a move
    assert app.wait_idle()
    assert app.explorer.setting.weights.sparsity == pytest.approx(0.5)


def test_a_resend_reaches_the_page_as_two_changes_ending_at_the_value(app):
    """What a served page gets when a draw may have crossed the user's move: the slider's Bokeh
    model changes twice (a hair off, then back), so the page ends at the server's value."""
    from bokeh.document import Document

    c = app.controls
    assert not c.drawn_lately("fc1.weight", seconds=0.0)
    app.explorer.prune(c.method.value, sparsity=0.6)  # a change from code draws every slider
    assert app.wait_idle()
    assert c.drawn_lately("fc1.weight") and not c.drawn_lately("no.such.weight")
    for name, slider in (("fc1.weight", c.layer_sliders["fc1.weight"]), (GLOBAL, c.sparsity)):
        model = slider.get_root(Document())
        seen = []
        model.on_change("value", lambda attr, old, new: seen.append(new))
        value = slider.value
        c.resend(name)
        assert len(seen) == 2 and seen[0] != value and seen[1] == value == model.value, (name, seen)
