"""Budgets, the strategy registry and bad input: clear ValueErrors, and the module as it was."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from token_test_models import MixerNet, adapter_for, hook_count, make_images, make_model, module_attributes, seeded

from prunescope.explorer.core.forward import forward
from prunescope.explorer.core.setting import TokenSetting
from prunescope.explorer.tokens import (
    STRATEGIES, find_adapter, intervention_factory, make_token_setting, register_strategy, strategy_options,
    token_budget, token_intervention,
)
from prunescope.explorer.tokens.strategies import ClsAttention

X = make_images(2)


def test_budget_forms():
    assert token_budget(0.5, 4) == (1.0, 0.5, 0.5, 0.5)
    assert token_budget(0.5, 4, start_block=0) == (0.5,) * 4
    assert token_budget(0.4, 4, schedule="linear") == pytest.approx((1.0, 0.8, 0.6, 0.4))
    assert token_budget(0.7, 12, schedule="drops", drop_at=(3, 6, 9)) == pytest.approx(
        (1, 1, 1, 0.7, 0.7, 0.7, 0.49, 0.49, 0.49, 0.343, 0.343, 0.343))
    assert token_budget(0.25, 5, schedule="two_stage") == pytest.approx((1.0, 0.5, 0.5, 0.25, 0.25))
    assert token_budget([1.0, 0.9, 0.9, 0.2], 4) == (1.0, 0.9, 0.9, 0.2)
    assert make_token_setting("feather", 0.25, 5).keep == pytest.approx((1.0, 0.5, 0.5, 0.25, 0.25))
    assert make_token_setting("random", 1.0, 4).is_dense


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, float("nan"), "half"])
def test_keep_outside_range_is_a_value_error(bad):
    with pytest.raises(ValueError, match=r"\(0, 1\]") as info:
        token_budget(bad, 4)
    assert repr(bad) in str(info.value) or str(bad) in str(info.value)


def test_bad_lists_and_schedules():
    with pytest.raises(ValueError, match="one value per block \\(4\\), got 3"):
        token_budget([1.0, 0.5, 0.5], 4)
    with pytest.raises(ValueError, match="non-increasing"):
        token_budget([1.0, 0.5, 0.6, 0.5], 4)
    with pytest.raises(ValueError, match=r"keep\[2\] must be in \(0, 1\]"):
        token_budget([1.0, 0.5, 0.0, 0.0], 4)
    with pytest.raises(ValueError, match="start_block must be an integer in \\[0, 3\\]"):
        token_budget(0.5, 4, start_block=4)
    with pytest.raises(ValueError, match="unknown schedule"):
        token_budget(0.5, 4, schedule="cosine")
    model = make_model("timm_cls")
    adapter = adapter_for(model, "timm_cls", X)
    with pytest.raises(ValueError, match="one keep value per block \\(4\\), got 3"):
        token_intervention(model, adapter, TokenSetting("random", (1.0, 0.5, 0.5)))
    assert hook_count(model) == 0


def test_registry_and_options():
    assert set(STRATEGIES) >= {"cls_attention", "row", "feather", "entropy_recycle", "merge", "adaptive", "random"}
    for s in STRATEGIES.values():
        assert s.display_name and s.description and (s.__doc__ or "").strip()
    with pytest.raises(ValueError, match="already registered"):
        register_strategy(ClsAttention)
    with pytest.raises(ValueError, match="unknown token strategy 'nope'; known: cls_attention"):
        make_token_setting("nope", 0.5, 4)
    with pytest.raises(ValueError, match="has no option"):
        strategy_options("adaptive", masss=0.5)
    with pytest.raises(ValueError):
        strategy_options("adaptive", mass=1.5)
    assert strategy_options("adaptive") == {"mass": 0.9, "min_tokens": 1}
    assert dict(make_token_setting("adaptive", 0.5, 4, mass=0.5).options) == {"mass": 0.5, "min_tokens": 1}


def test_model_without_blocks():
    with pytest.raises(ValueError, match="has no transformer blocks"):
        find_adapter(nn.Sequential(nn.Linear(4, 4)))


@pytest.mark.parametrize("name", ["cls_attention", "row", "feather", "entropy_recycle", "adaptive"])
def test_attention_strategy_on_attention_free_blocks(name):
    model = seeded(MixerNet)
    adapter = find_adapter(model, example=X)
    assert not adapter.has_attention
    before = module_attributes(model)
    with pytest.raises(ValueError, match=f"{name!r} reads attention.*random, merge"):
        token_intervention(model, adapter, make_token_setting(name, 0.5, 4))
    assert hook_count(model) == 0 and module_attributes(model) == before


def test_drop_and_merge_work_without_attention():
    model = seeded(MixerNet)
    adapter = find_adapter(model, example=X)
    for name in ("random", "merge"):
        out = forward(model, {}, X, intervention=intervention_factory(model, adapter, make_token_setting(name, 0.25, 4)))
        assert out.logits.shape == (2, 5) and torch.isfinite(out.logits).all()


def test_error_inside_the_forward_leaves_the_module_as_found():
    """The row strategy needs a grid; 65 'patches' (CLS treated as a patch) have none: the error
    is raised inside a block's hook, and every hook is gone after."""
    model = make_model("timm_cls")
    adapter = dataclasses.replace(adapter_for(model, "timm_cls", X), cls_index=None, num_tokens=65)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    before = module_attributes(model)
    factory = intervention_factory(model, adapter, make_token_setting("row", 0.5, 4))
    with pytest.raises(ValueError, match="needs the patch grid"):
        forward(model, {}, X, intervention=factory)
    assert hook_count(model) == 0
    assert module_attributes(model) == before
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert not any(m.training for m in model.modules())


def test_user_masks_with_a_shortened_sequence_are_refused():
    model = make_model("enc_pre_bf_cls")
    adapter = adapter_for(model, "enc_pre_bf_cls", X)
    enc = model.encoder
    seq = torch.randn(2, 65, 32)
    with pytest.raises(ValueError, match="src_mask"):
        with token_intervention(enc, dataclasses.replace(adapter, block_names=tuple(n.split(".", 1)[1] for n in adapter.block_names)),
                                make_token_setting("random", 0.5, 4)):
            enc(seq, mask=torch.zeros(65, 65))
    assert hook_count(enc) == 0
