"""The Tokens tab: controls write the token budget, drawn data equals the engine's, jobs run,
bad input shows the app's alert and the session keeps running."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from prunescope.explorer import Explorer
from prunescope.explorer.app import ExplorerApp
from prunescope.explorer.core.setting import DENSE
from prunescope.explorer.tokens import KEPT, TokenRecord, make_token_setting, token_counts
from prunescope.explorer.tokens.analysis import region_coverage, retention_map
from prunescope.sample_models import get_sample_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")
#: Test images the ViT explorer evaluates on (a slice of the sample's test split keeps the tests fast).
IMAGES = 96


def vit_explorer(name: str) -> Explorer:
    """shapes_vit on the first test images (trained weights when shipped, else freshly built)."""
    if name != "shapes_vit":
        return Explorer.from_sample(name)
    spec = get_sample_model(name)
    model = spec.load() if spec.checkpoint_path("trained").is_file() else spec.build().eval()
    x, y = spec.data("test")
    ex = Explorer(model, data=(x[:IMAGES], y[:IMAGES]), weights=list(spec.prunable_weights), name=name)
    ex.sample = spec
    return ex


@pytest.fixture(scope="module")
def vit_app(close_app, one_torch_thread):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ExplorerApp, "_build_explorer", staticmethod(vit_explorer))
        app = ExplorerApp(model="shapes_vit")
    app.tabs.active = app.tabs._names.index("Tokens")
    assert app.wait_idle() and app.tokens.wait_idle()
    yield app
    assert app.tokens.wait_idle(120)
    close_app(app)


def settle(app: ExplorerApp) -> None:
    assert app.wait_idle(60) and app.tokens.wait_idle(120)


def flipped(values: torch.Tensor) -> np.ndarray:
    return values.double().numpy()[::-1]


def test_a_model_without_blocks_gets_a_note(app):
    view = app.tokens
    assert ("Tokens", view) in app.extra_tabs and "Tokens" in app.tabs._names
    assert view.data is None and not view.controls.visible and not view.sections.visible
    assert "no transformer blocks" in view.message.object
    app.tabs.active = app.tabs._names.index("Tokens")  # refreshing a tab without data is a no-op
    assert app.explorer.setting.tokens is None


def test_keep_slider_sets_the_budget(vit_app):
    view, ex = vit_app.tokens, vit_app.explorer
    view.strategy.value = "cls_attention"
    view.keep.value = 0.5
    settle(vit_app)
    assert ex.setting.tokens == make_token_setting("cls_attention", 0.5, 4, start_block=1, seed=0)
    assert [s.value for s in view.block_sliders] == [1.0, 0.5, 0.5, 0.5]
    table = view.budget_table.object
    expected = [t for _, t, _ in token_counts(view.data.adapter, ex.setting.tokens, 64)]
    assert list(table["tokens processed"]) == expected == [65, 33, 33, 33]
    assert "32, 32, 32" in view.budget_note.object
    assert ex.cost().flops_effective < ex.cost(DENSE).flops_effective


def test_token_map_counts_and_status_equal_the_record(vit_app):
    view, ex = vit_app.tokens, vit_app.explorer
    view.strategy.value = "cls_attention"
    view.keep.value = 0.3
    view.image.index.value = 5
    settle(vit_app)
    image = view.image
    assert image.inspection.index == 5 and image.inspection.setting == ex.setting
    k = math.ceil(0.3 * 64)
    assert [c["kept"] for c in image.counts] == [64, k, k, k]
    assert [c["dropped"] for c in image.counts] == [0, 64 - k, 64 - k, 64 - k]
    labels = image.token_maps[2].cells.data["label"]
    assert labels.count(f"kept {k}") == k and labels.count(f"dropped {64 - k}") == 64 - k
    record = TokenRecord()
    ex.run(ex.eval_data[0][5:6], record=record)
    for b in range(4):
        drawn = torch.tensor([s == KEPT for s in image.inspection.status[b].reshape(-1).tolist()])
        assert torch.equal(drawn, (record.status(b)[0] == KEPT))
    x, y = ex.eval_data
    assert f"Image 5: true class <b>{ex.sample.class_names[int(y[5])]}</b>" in image.note.object
    pred = int(ex.run(x[5:6]).logits.argmax())
    assert f"this setting: <b>{ex.sample.class_names[pred]}</b>" in image.note.object


def test_heatmaps_are_the_records_cls_attention(vit_app):
    view, ex = vit_app.tokens, vit_app.explorer
    view.strategy.value = "cls_attention"
    view.keep.value = 0.5
    view.image.index.value = 7
    settle(vit_app)
    record = TokenRecord(attention=True)
    ex.run(ex.eval_data[0][7:8], record=record)
    for b in (0, 2):
        (attn, pos), = record.attention(b)
        for h in (0, 3, "mean"):
            view.image.head.value = h
            row = attn[0, :, 0, 1:].double().mean(0) if h == "mean" else attn[0, h, 0, 1:].double()
            expected = torch.full((64,), float("nan"), dtype=torch.float64)
            expected[pos[0, 1:]] = row
            drawn = view.image.heatmaps[b].heat.data["image"][0]
            np.testing.assert_allclose(drawn, flipped(expected.reshape(8, 8)), rtol=1e-6, atol=1e-9)
            assert (~np.isnan(drawn)).sum() == (64 if b == 0 else 32)
    rollout = view.image.rollout.heat.data["image"][0]
    assert rollout.shape == (8, 8) and np.all(rollout >= 0)


def test_per_block_sliders_and_bad_input_keep_the_app_running(vit_app):
    view, ex = vit_app.tokens, vit_app.explorer
    view.keep.value = 0.5
    settle(vit_app)
    view.block_sliders[3].value = 0.25
    settle(vit_app)
    assert ex.setting.tokens.keep == (1.0, 0.5, 0.5, 0.25)
    before = ex.setting
    view.block_sliders[2].value = 0.9  # increasing with depth: refused
    settle(vit_app)
    assert ex.setting == before
    assert vit_app.alert.visible and "non-increasing" in vit_app.alert.object
    assert [s.value for s in view.block_sliders] == [1.0, 0.5, 0.5, 0.25]  # back to the state
    view.schedule.value = "drops"  # EViT: keep^n after n drops, at blocks 1, 2, 3 by default
    view.keep.value = 0.5
    settle(vit_app)
    assert ex.setting.tokens.keep == pytest.approx((1.0, 0.5, 0.25, 0.125))
    before = ex.setting
    view.drop_at.value = "1, nine"
    settle(vit_app)
    assert ex.setting == before and "nine" in vit_app.alert.object and "[0, 3]" in vit_app.alert.object
    view.drop_at.value = "1, 3"
    settle(vit_app)
    assert not vit_app.alert.visible
    assert ex.setting.tokens.keep == pytest.approx((1.0, 0.5, 0.5, 0.25))  # keep 0.5, dropped twice
    view.schedule.value = ""
    view.remove.clicks += 1
    settle(vit_app)
    assert ex.setting.tokens is None and view.keep.value == 1.0


def test_strategy_options_reach_the_setting(vit_app):
    view, ex = vit_app.tokens, vit_app.explorer
    view.strategy.value = "adaptive"
    view.keep.value = 0.5
    settle(vit_app)
    assert set(view.option_widgets) == {"mass", "min_tokens"}
    view.option_widgets["mass"].value = 0.5
    settle(vit_app)
    assert dict(ex.setting.tokens.options)["mass"] == 0.5 and ex.setting.tokens.strategy == "adaptive"
    ex.set_token_budget(0.4, strategy="merge")  # from code: the tab follows the state
    vit_app.tokens.refresh()
    settle(vit_app)
    assert view.strategy.value == "merge" and view.keep.value == 0.4
    assert [s.value for s in view.block_sliders] == [1.0, 0.4, 0.4, 0.4]


def test_retention_job_equals_an_independent_record(vit_app):
    view, ex = vit_app.tokens, vit_app.explorer
    ex.set_token_budget(0.25, strategy="cls_attention")
    vit_app.tokens.refresh()
    settle(vit_app)
    section = view.retention
    section.run()
    assert section.job.running or section.result is not None
    assert section.wait_idle(180)
    result = section.result
    assert set(result.maps) == set(view.data.strategies())
    for name in ("cls_attention", "feather"):
        tokens = make_token_setting(name, list(ex.setting.tokens.keep), 4)
        record = TokenRecord()
        ex.run(None, ex.setting.__class__(weights=ex.setting.weights, tokens=tokens), record=record)
        torch.testing.assert_close(result.maps[name], retention_map(record, (8, 8)))
        row = result.table[(result.table["strategy"] == name) & (result.table["block"] == 3)].iloc[0]
        assert row["coverage"] == pytest.approx(region_coverage(record.status(3), (8, 8)))
        drawn = section.figures[(name, 1)].heat.data["image"][0]  # block 1 prunes; 2 and 3 keep as many
        np.testing.assert_allclose(drawn, flipped(result.maps[name][1]))
        assert (name, 2) not in section.figures
    assert f"{IMAGES} test images" in section.job.status.object
    assert "FEATHER" in section.note.object and "%" in section.note.object
    ex.set_token_budget(0.5, strategy="cls_attention")
    section.mark(ex.setting)
    assert "earlier setting" in section.stale.object


def test_retention_refuses_the_dense_model(vit_app):
    view, ex = vit_app.tokens, vit_app.explorer
    ex.set_token_budget(None)
    view.retention.run()
    assert view.retention.wait_idle(60)
    assert vit_app.alert.visible and "below 1" in vit_app.alert.object


def test_attributions_show_both_predictions(vit_app):
    view, ex = vit_app.tokens, vit_app.explorer
    ex.prune("magnitude", sparsity=0.5).set_token_budget(0.25, strategy="cls_attention")
    view.refresh()
    view.image.index.value = 3
    settle(vit_app)
    section = view.attribution
    section.method.value = "integrated_gradients"
    section.steps.value = 8
    section.run()
    assert section.wait_idle(180)
    result = section.result
    x = ex.eval_data[0][3:4]
    dense_pred = int(ex.run(x, DENSE).logits.argmax())
    pruned_pred = int(ex.run(x).logits.argmax())
    assert result.dense["prediction"] == dense_pred and result.pruned["prediction"] == pruned_pred
    assert result.pruned["target"] == dense_pred  # both explain the dense model's class
    names = ex.sample.class_names
    assert section.figures[0].figure.title.text.startswith(f"dense: predicts {names[dense_pred]}")
    assert section.figures[1].figure.title.text.startswith(f"this setting: predicts {names[pruned_pred]}")
    np.testing.assert_allclose(section.figures[1].heat.data["image"][0],
                               flipped(result.pruned["attribution"].sum(0)), rtol=1e-6)
    assert f"{result.pruned['delta']:.2e}" in section.note.object
    ex.prune("magnitude", sparsity=0.0)


def test_curves_job_marks_the_measured_setting(vit_app):
    view, ex = vit_app.tokens, vit_app.explorer
    view.schedule.value = ""
    view.strategy.value = "cls_attention"
    view.keep.value = 0.35
    settle(vit_app)
    section = view.curves
    section.strategies.value = ["cls_attention", "random"]
    section.run()
    assert section.wait_idle(180)
    result = section.result
    measured = ex.evaluate()
    i = section.lines.data["label"].index("CLS attention (EViT)")
    k = section.lines.data["xs"][i].index(35.0)
    assert section.lines.data["ys"][i][k] == pytest.approx(100 * measured.accuracy)
    assert section.star.data["x"] == [35.0] and section.star.data["y"] == [pytest.approx(100 * measured.accuracy)]
    assert len(result.table) == 2 * len(section.keeps(ex.setting)) and not result.cancelled
    view.keep.value = 0.2  # the star follows the setting, measured by the engine
    settle(vit_app)
    assert section.star.data["x"] == [20.0]
    assert section.star.data["y"] == [pytest.approx(100 * ex.evaluate().accuracy)]


def test_curves_job_cancels(vit_app):
    section = vit_app.tokens.curves
    section.strategies.value = list(section.strategies.options.values())
    section.run()
    section.job.cancel()
    assert section.wait_idle(180)
    assert section.result.cancelled
    assert section.job.status.object.startswith("Cancelled")
    assert len(section.result.table) < 7 * len(section.keeps(vit_app.explorer.setting))
