"""Token pruning through the one forward: dense at keep=1, exact counts, CLS and order kept,
physically shortened sequences, conserved mass, per-image budgets, weight masks combined."""

from __future__ import annotations

import math

import pytest
import torch
from token_test_models import MODEL_KINDS, adapter_for, make_images, make_model

from prunescope.explorer.core.forward import forward
from prunescope.explorer.tokens import (
    DROPPED, STRATEGIES, TokenRecord, intervention_factory, make_token_setting, token_intervention,
)

X = make_images(6)
BUDGET = [1.0, 0.6, 0.3, 0.1]
SELECTING = ["cls_attention", "random", "row", "feather"]


@pytest.mark.parametrize("kind", list(MODEL_KINDS))
def test_keep_one_reproduces_dense_logits_exactly(kind):
    model = make_model(kind)
    adapter = adapter_for(model, kind, X)
    dense = forward(model, {}, X).logits
    for name in STRATEGIES:
        setting = make_token_setting(name, 1.0, adapter.num_blocks)
        out = forward(model, {}, X, intervention=intervention_factory(model, adapter, setting)).logits
        assert torch.equal(out, dense), name


def capture_blocks(model, adapter):
    """Register (after the intervention's) hooks that keep every block's input and output."""
    seen = {"in": {}, "out": {}}
    handles = []
    for b, blk in enumerate(adapter.blocks(model)):
        def pre(m, args, kwargs, b=b):
            seen["in"][b] = adapter.block_input(args, kwargs).detach()
        def post(m, args, kwargs, out, b=b):
            seen["out"][b] = (out.transpose(0, 1) if adapter.seq_first else out).detach()
        handles += [blk.register_forward_pre_hook(pre, with_kwargs=True), blk.register_forward_hook(post, with_kwargs=True)]
    return seen, handles


@pytest.mark.parametrize("kind", ["timm_cls", "enc_post_bf_lastcls", "enc_post_sf_nocls"])
@pytest.mark.parametrize("name", SELECTING + ["entropy_recycle", "merge"])
def test_counts_cls_and_order(kind, name):
    model = make_model(kind)
    adapter = adapter_for(model, kind, X)
    P = adapter.num_patches
    setting = make_token_setting(name, BUDGET, adapter.num_blocks)
    record = TokenRecord(attention=True)
    with token_intervention(model, adapter, setting, record):
        seen, handles = capture_blocks(model, adapter)
        try:
            with torch.no_grad():
                model(X)
        finally:
            for h in handles:
                h.remove()
    has_cls = adapter.cls_index is not None
    extra = STRATEGIES[name].extra_tokens
    for b, keep in enumerate(BUDGET):
        k = math.ceil(keep * P)
        assert record.patches(b).tolist() == [k] * len(X)
        tokens = k + has_cls + (extra if keep < 1 else 0)
        assert seen["in"][b].shape[1] == tokens, "the block really processes the shortened sequence"
        (_, positions), = record.attention(b)
        for row in positions:
            present = row[row >= 0]
            assert torch.all(present[1:] > present[:-1]), "kept tokens stay in their original order"
        if b == 0:
            continue
        prev_pos = record.attention(b - 1)[0][1]
        prev_out, now_in = seen["out"][b - 1], seen["in"][b]
        if has_cls:  # CLS is carried where it was
            c_prev, c_now = (0, 0) if adapter.cls_index == 0 else (prev_out.shape[1] - 1, now_in.shape[1] - 1)
            assert torch.equal(now_in[:, c_now], prev_out[:, c_prev])
        if name in SELECTING:  # a kept token is the previous block's output at its position
            for i in range(len(X)):
                for j, p in enumerate(positions[i].tolist()):
                    if p >= 0:
                        src = prev_pos[i].tolist().index(p)
                        assert torch.equal(now_in[i, j], prev_out[i, src])


@pytest.mark.parametrize("kind", ["timm_mean", "enc_post_sf_nocls", "enc_post_bf_lastcls"])
@pytest.mark.parametrize("name", ["merge", "entropy_recycle"])
def test_merge_and_recycle_conserve_token_mass(kind, name):
    model = make_model(kind)
    adapter = adapter_for(model, kind, X)
    setting = make_token_setting(name, [1.0, 0.5, 0.2, 0.05], adapter.num_blocks)
    record = TokenRecord()
    forward(model, {}, X, intervention=intervention_factory(model, adapter, setting, record))
    for b in range(adapter.num_blocks):
        assert torch.allclose(record.mass(b), torch.full((len(X),), float(adapter.num_patches), dtype=record.mass(b).dtype))
        assert not bool((record.status(b) == DROPPED).any()), "merged or recycled, never dropped"


def test_merged_tokens_are_size_weighted_means():
    """ToMe at block 1: sum over the entering tokens of size x token equals the sum of block 0's
    patch outputs (each merged token is the size-weighted mean of its members), sizes >= 1 sum to
    the patch count, and the kept count is exact."""
    model = make_model("timm_cls")
    adapter = adapter_for(model, "timm_cls", X)
    setting = make_token_setting("merge", [1.0, 0.7, 0.3, 0.3], adapter.num_blocks)
    record = TokenRecord()
    with token_intervention(model, adapter, setting, record):
        seen, handles = capture_blocks(model, adapter)
        with torch.no_grad():
            model(X)
        for h in handles:
            h.remove()
    for b in (1, 2):
        (positions, sizes), = record.sequence(b)
        patches_in = seen["in"][b][:, 1:].double()
        patches_prev = seen["out"][b - 1][:, 1:].double()
        (_, prev_sizes), = record.sequence(b - 1)
        expect = (patches_prev * prev_sizes[:, 1:, None].double()).sum(1)
        got = (patches_in * sizes[:, 1:, None].double()).sum(1)
        assert torch.allclose(got, expect, atol=1e-4)
        assert bool((sizes[:, 1:] >= 1).all()) and torch.allclose(sizes[:, 1:].sum(1).double(), torch.full((len(X),), 64.0, dtype=torch.float64))
        assert patches_in.shape[1] == math.ceil(setting.keep[b] * 64)
