"""The widget's token box: controls write the token budget, drawn data equals the engine's record."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from prunescope.explorer import Explorer
from prunescope.explorer.tokens import KEPT, MERGED, TokenRecord, make_token_setting
from prunescope.sample_models import get_sample_model
from prunescope.widgets import ExplorerWidget
from prunescope.widgets.tokens_widget import TokensBox


@pytest.fixture(scope="module")
def vit() -> Explorer:
    """shapes_vit on 64 test images (trained weights when shipped, else freshly built)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    spec = get_sample_model("shapes_vit")
    model = spec.load() if spec.checkpoint_path("trained").is_file() else spec.build().eval()
    x, y = spec.data("test")
    ex = Explorer(model, data=(x[:64], y[:64]), weights=list(spec.prunable_weights), name="shapes_vit")
    ex.sample = spec
    yield ex
    torch.set_num_threads(before)


@pytest.fixture
def widget(vit):
    vit.set_token_budget(None)
    vit.prune("magnitude", sparsity=0.0)
    w = ExplorerWidget(vit)
    yield w
    w.close()


def test_no_token_box_without_transformer_blocks():
    w = ExplorerWidget(Explorer.from_sample("digits_mlp"))
    try:
        assert w.tokens is None and not any(isinstance(c, TokensBox) for c in w.children)
    finally:
        w.close()


def test_keep_slider_sets_the_budget_and_the_metrics_follow(widget, vit):
    box = widget.tokens
    assert isinstance(box, TokensBox) and box in widget.children
    box.keep.value = 0.5
    assert widget.error is None and box.error is None
    assert vit.setting.tokens == make_token_setting("cls_attention", 0.5, 4, start_block=1)
    assert [s.value for s in box.block_sliders] == [1.0, 0.5, 0.5, 0.5]
    assert widget.metrics.accuracy == vit.evaluate().accuracy
    assert widget.metrics.flops_effective == vit.cost().flops_effective < vit.cost(vit.setting.__class__()).flops_effective
    assert box.counts["kept"] == math.ceil(0.5 * 64) and box.counts["dropped"] == 32
    assert box.picture.value[:8] == b"\x89PNG\r\n\x1a\n"


def test_heatmap_is_the_records_cls_attention(widget, vit):
    box = widget.tokens
    box.keep.value = 0.25
    box.image_index.value = 9
    box.block.value = 2
    for head in ("mean", 1):
        box.head.value = head
        record = TokenRecord(attention=True)
        vit.run(vit.eval_data[0][9:10], record=record)
        (attn, pos), = record.attention(2)
        rows = attn[0, :, 0, 1:].double()  # (heads, patches present): CLS row
        row = rows.mean(0) if head == "mean" else rows[head]
        expected = torch.full((64,), float("nan"), dtype=torch.float64)
        expected[pos[0, 1:]] = row
        np.testing.assert_allclose(box.heatmap, expected.reshape(8, 8).numpy(), rtol=1e-6, atol=1e-9)
        kept = torch.from_numpy(box.status_map.reshape(-1) == KEPT)
        assert torch.equal(kept, record.status(2)[0] == KEPT) and int(kept.sum()) == 16


def test_code_changes_reach_the_box(widget, vit):
    box = widget.tokens
    vit.set_token_budget([1.0, 0.5, 0.25, 0.25], strategy="merge")
    assert box.strategy.value == "merge"
    assert [s.value for s in box.block_sliders] == [1.0, 0.5, 0.25, 0.25]
    box.block.value = 3
    assert box.counts["kept"] == 16 and box.counts["merged"] == 48  # ToMe merges, drops nothing
    record = TokenRecord()
    vit.run(vit.eval_data[0][:1], record=record)
    assert int((record.status(3)[0] == MERGED).sum()) == 48


def test_bad_input_is_refused_and_echoes_are_ignored(widget, vit):
    box = widget.tokens
    box.keep.value = 0.5
    before = vit.setting
    box.block_sliders[2].value = 0.9  # more tokens deeper: refused
    assert vit.setting == before
    assert "non-increasing" in box.error and "non-increasing" in box.error_html.value
    assert [s.value for s in box.block_sliders] == [1.0, 0.5, 0.5, 0.5]
    box.block_sliders[3].value = 0.5 + 0.004  # the browser snapping the drawn value: not input
    assert vit.setting == before
