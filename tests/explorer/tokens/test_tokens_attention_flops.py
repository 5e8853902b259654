"""Explicit attention against PyTorch's own, rows summing to 1 under biases, and FLOPs per block
against FlopCounterMode on the physically shortened model."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from token_test_models import adapter_for, make_images, make_model

from prunescope.explorer.core.forward import forward
from prunescope.explorer.tokens import (
    TokenRecord, intervention_factory, make_token_setting, token_flops, token_intervention,
)
from prunescope.explorer.tokens.flops import token_cost

X = make_images(2)


def test_timm_attention_is_the_blocks_attention():
    """softmax(q k^T * scale) from the adapter, times v and the projection, gives the module's output."""
    model = make_model("timm_cls")
    adapter = adapter_for(model, "timm_cls", X)
    blk = model.blocks[1]
    x = torch.randn(2, 65, 32)
    h = blk.norm1(x)
    with torch.no_grad():
        probs = adapter.attention(blk, x)
        v = blk.attn.qkv(h).reshape(2, 65, 3, 4, 8)[:, :, 2].transpose(1, 2)
        mine = blk.attn.proj((probs @ v).transpose(1, 2).reshape(2, 65, 32))
        assert torch.allclose(mine, blk.attn(h), atol=1e-5)


@pytest.mark.parametrize("kind", ["enc_pre_bf_cls", "enc_post_sf_nocls"])
def test_encoder_attention_matches_multihead_attention_weights(kind):
    model = make_model(kind)
    adapter = adapter_for(model, kind, X)
    layer = adapter.blocks(model)[2]
    x = torch.randn(3, 20, 32)
    h = layer.norm1(x) if layer.norm_first else x
    with torch.no_grad():
        hs = h if layer.self_attn.batch_first else h.transpose(0, 1)
        _, ref = layer.self_attn(hs, hs, hs, need_weights=True, average_attn_weights=False)
        assert torch.allclose(adapter.attention(layer, x), ref, atol=1e-6)


@pytest.mark.parametrize("kind", ["timm_cls", "enc_post_bf_cls", "enc_pre_sf_cls"])
@pytest.mark.parametrize("name", ["merge", "adaptive", "cls_attention"])
def test_recorded_attention_rows_sum_to_one(kind, name):
    model = make_model(kind)
    adapter = adapter_for(model, kind, X)
    options = {"mass": 0.3} if name == "adaptive" else {}
    setting = make_token_setting(name, [1.0, 0.5, 0.5, 0.25], adapter.num_blocks, **options)
    record = TokenRecord(attention=True)
    forward(model, {}, X, intervention=intervention_factory(model, adapter, setting, record))
    for b in range(adapter.num_blocks):
        (attn, positions), = record.attention(b)
        assert attn.shape[-1] == positions.shape[1]
        assert torch.allclose(attn.sum(-1), torch.ones(attn.shape[:-1]), atol=1e-5)
        (_, sizes), = record.sequence(b)
        padding = (sizes == 0)[:, None, None, :].expand_as(attn)
        assert bool((attn[padding] == 0).all()), "padding gets no attention"


def test_proportional_attention_adds_log_size():
    """After a ToMe merge, the block's attention equals softmax(qk/sqrt(d) + log size) computed here."""
    model = make_model("timm_cls")
    adapter = adapter_for(model, "timm_cls", X)
    setting = make_token_setting("merge", [1.0, 0.5, 0.5, 0.5], adapter.num_blocks)
    record = TokenRecord(attention=True)
    inputs = {}
    handle = model.blocks[2].register_forward_pre_hook(lambda m, a: inputs.setdefault("x", a[0]))
    try:
        forward(model, {}, X, intervention=intervention_factory(model, adapter, setting, record))
    finally:
        handle.remove()
    (attn, _), = record.attention(2)
    (_, sizes), = record.sequence(2)
    blk, x = model.blocks[2], inputs["x"]
    B, N, C = x.shape
    with torch.no_grad():
        q, k, v = blk.attn.qkv(blk.norm1(x)).reshape(B, N, 3, 4, 8).permute(2, 0, 3, 1, 4)
        logits = q @ k.transpose(-2, -1) / math.sqrt(8) + sizes.log()[:, None, None, :]
        assert bool((sizes > 1).any())
        assert torch.allclose(attn, logits.softmax(-1), atol=1e-5)


def test_biased_block_output_and_restored_forward():
    """Under ToMe the block's attention *output* is softmax(qk/sqrt(d) + log size) v, projected
    (written here); afterwards ``attn.forward`` is the class's again, and a user's own instance
    ``forward`` survives the intervention."""
    model = make_model("timm_cls")
    adapter = adapter_for(model, "timm_cls", X)
    setting = make_token_setting("merge", [1.0, 0.5, 0.5, 0.5], adapter.num_blocks)
    record = TokenRecord()
    attn = model.blocks[2].attn
    seen = {}
    handle = attn.register_forward_hook(lambda m, a, out: seen.update(x=a[0], out=out))
    try:
        forward(model, {}, X, intervention=intervention_factory(model, adapter, setting, record))
    finally:
        handle.remove()
    (_, sizes), = record.sequence(2)
    x = seen["x"]
    B, N, C = x.shape
    with torch.no_grad():
        q, k, v = attn.qkv(x).reshape(B, N, 3, 4, 8).permute(2, 0, 3, 1, 4)
        probs = (q @ k.transpose(-2, -1) / math.sqrt(8) + sizes.log()[:, None, None, :]).softmax(-1)
        expected = attn.proj((probs @ v).transpose(1, 2).reshape(B, N, C))
    assert bool((sizes > 1).any())
    assert torch.allclose(seen["out"], expected, atol=1e-5)
    assert "forward" not in vars(attn)

    calls = []
    def own_forward(x):
        calls.append(x.shape[1])
        return type(attn).forward(attn, x)
    attn.forward = own_forward
    try:
        with token_intervention(model, adapter, setting):
            model(X)
        assert attn.forward is own_forward
        model(X)
        assert calls == [65]  # the dense run after the context goes through the user's forward
    finally:
        del attn.forward


@contextlib.contextmanager
def countable():
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH), torch.no_grad():
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


def counted_blocks(model, adapter, run) -> list[int]:
    """FlopCounterMode's per-block counts of ``run()``, per image."""
    with countable(), FlopCounterMode(display=False) as fc:
        run()
    per = {k: sum(v.values()) for k, v in fc.get_flop_counts().items()}
    root = type(model).__name__
    return [per.get(f"{root}.{n}", 0) / len(X) for n in adapter.block_names]


def shortened_run(model, adapter, counts):
    """The model with block b fed only the first counts[b] tokens (slicing written here)."""
    def run():
        handles = []
        for b, blk in enumerate(adapter.blocks(model)):
            def pre(m, args, kwargs, b=b):
                x = args[0] if args else kwargs["src"]
                x = x[:, : counts[b]] if not adapter.seq_first else x[: counts[b]]
                return (x, *args[1:]), kwargs if args else ((), {**kwargs, "src": x})
            handles.append(blk.register_forward_pre_hook(pre, with_kwargs=True))
        try:
            model(X)
        finally:
            for h in handles:
                h.remove()
    return run


@pytest.mark.parametrize("kind, name", [
    ("timm_cls", "random"), ("timm_cls", "cls_attention"), ("timm_cls", "merge"), ("timm_cls", "entropy_recycle"),
    ("enc_pre_bf_cls", "cls_attention"), ("enc_pre_bf_cls", "merge"), ("enc_post_sf_nocls", "cls_attention"),
    ("enc_post_sf_nocls", "entropy_recycle"),
])
def test_flops_equal_flopcounter_on_the_shortened_model(kind, name):
    model = make_model(kind)
    adapter = adapter_for(model, kind, X)
    setting = make_token_setting(name, [1.0, 0.5, 0.5, 0.25], adapter.num_blocks)
    table = token_flops(model, adapter, setting)
    has_cls = adapter.cls_index is not None
    extra = 1 if name == "entropy_recycle" else 0
    counts = [64 + has_cls] + [math.ceil(k * 64) + has_cls + extra for k in setting.keep[1:]]
    assert table["tokens"].tolist() == counts
    assert table["flops"].tolist() == counted_blocks(model, adapter, shortened_run(model, adapter, counts))
    assert table["dense_flops"].tolist() == counted_blocks(model, adapter, shortened_run(model, adapter, [65] * 4 if has_cls else [64] * 4))
    # the intervention's own run costs the blocks plus the criterion's (and bias) overhead
    factory = intervention_factory(model, adapter, setting)
    def pruned():
        with factory():
            model(X)
    measured = counted_blocks(model, adapter, pruned)
    assert measured == (table["flops"] + table["overhead_flops"]).tolist()


def test_attention_flops_grow_with_tokens_squared():
    model = make_model("timm_cls")
    adapter = adapter_for(model, "timm_cls", X)
    a = token_flops(model, adapter, make_token_setting("random", [1.0, 0.5, 0.25, 0.25], 4))
    ratio_att = a["attention_flops"][1] / a["attention_flops"][2]
    ratio_lin = a["linear_flops"][1] / a["linear_flops"][2]
    assert ratio_att == pytest.approx((33 / 17) ** 2) and ratio_lin == pytest.approx(33 / 17)


def test_token_cost_whole_model_matches_flopcounter():
    model = make_model("timm_cls")
    adapter = adapter_for(model, "timm_cls", X)
    setting = make_token_setting("random", 0.25, adapter.num_blocks)
    cost = token_cost(model, adapter, setting, X)
    factory = intervention_factory(model, adapter, setting)
    with countable(), FlopCounterMode(display=False) as fc, factory():
        model(X[:1])
    assert cost["flops"] == fc.get_total_flops()
    assert cost["reduction"] > 2.0
