"""Strategy semantics checked independently, per-image budgets, weight masks with tokens,
attention rollout, retention maps and FEATHER's coverage, accuracy curves, Captum attributions."""

from __future__ import annotations

import copy
import math
import threading

import pytest
import torch
import torch.nn.functional as F
from token_test_models import adapter_for, make_images, make_model

from prunescope.explorer.core.forward import forward, masked_params
from prunescope.explorer.tokens import KEPT, intervention_factory, make_token_setting
from prunescope.explorer.tokens.analysis import (
    accuracy_curves, attention_rollout, attributions, block_attention, kept_count_stats, record_forward,
    region_coverage, retention_map, token_map,
)

X = make_images(6)


def own_cls_attention(model, x):
    """CLS-to-patch attention of timm block 1 on its input, written here (mean over heads)."""
    blk = model.blocks[1]
    B, N, C = x.shape
    q, k, _ = blk.attn.qkv(blk.norm1(x)).reshape(B, N, 3, 4, 8).permute(2, 0, 3, 1, 4)
    return ((q @ k.transpose(-2, -1)) / math.sqrt(8)).softmax(-1)[:, :, 0, 1:].mean(1)


def sharpened(model, factor: float = 2.0):
    """Scale the query/key weights so attention is peaked (a random model's is nearly uniform)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("qkv.weight"):
                p[: 2 * p.shape[1]] *= factor
            elif name.endswith("in_proj_weight"):
                p[: 2 * p.shape[1]] *= factor
    return model


def block1_input(model):
    seen = {}
    handle = model.blocks[1].register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    with torch.no_grad():
        model(X)
    handle.remove()
    return seen["x"]


def test_cls_attention_keeps_the_independent_top_k():
    model = make_model("timm_cls")
    adapter = adapter_for(model, "timm_cls", X)
    _, record = record_forward(model, {}, adapter, make_token_setting("cls_attention", [1, 0.25, 0.25, 0.25], 4), X)
    with torch.no_grad():
        score = own_cls_attention(model, block1_input(model))
    expect = torch.zeros(6, 64, dtype=torch.bool).scatter_(1, score.topk(16, 1).indices, True)
    assert torch.equal(record.status(1) == KEPT, expect)


def test_row_keeps_whole_rows_then_one_contiguous_run():
    model = make_model("timm_cls")
    adapter = adapter_for(model, "timm_cls", X)
    _, record = record_forward(model, {}, adapter, make_token_setting("row", [1, 0.3, 0.3, 0.3], 4), X)
    with torch.no_grad():
        score = own_cls_attention(model, block1_input(model)).reshape(6, 8, 8)
    kept = (record.status(1) == KEPT).reshape(6, 8, 8)
    k = math.ceil(0.3 * 64)  # 20 = two full rows and a run of 4
    for i in range(6):
        per_row = kept[i].sum(1)
        full = (per_row == 8).nonzero().flatten()
        assert sorted(full.tolist()) == sorted(score[i].mean(1).topk(2).indices.tolist())
        partial = ((per_row > 0) & (per_row < 8)).nonzero().flatten()
        assert len(partial) == 1 and per_row[partial].item() == k - 16
        r = partial.item()
        cols = kept[i, r].nonzero().flatten()
        assert cols.max() - cols.min() == len(cols) - 1, "one contiguous run"
        run_sum = score[i, r, cols].sum()
        best = max(score[i, r, s : s + 4].sum() for s in range(5))
        assert torch.isclose(run_sum, best)
        assert r == score[i].mean(1).topk(3).indices[2].item(), "the run is in the next best row"


@pytest.mark.parametrize("kind", ["timm_cls", "enc_post_bf_cls"])
def test_adaptive_counts_vary_and_padding_matches_per_image(kind):
    model = sharpened(make_model(kind))
    adapter = adapter_for(model, kind, X)
    setting = make_token_setting("adaptive", [1, 0.5, 0.5, 0.25], 4, mass=0.5)
    batched, record = record_forward(model, {}, adapter, setting, X)
    single = forward(model, {}, X, intervention=intervention_factory(model, adapter, setting), batch_size=1).logits
    assert torch.allclose(batched, single, atol=1e-5)
    counts = record.patches(1)
    assert len(set(counts.tolist())) > 1, "the kept count varies by image"
    assert bool((counts <= 32).all() and (record.patches(3) <= 16).all())
    stats = kept_count_stats(record, 1)
    assert stats["mean"] == pytest.approx(counts.double().mean().item())
    assert stats["std"] == pytest.approx(counts.double().std(unbiased=False).item())
    # each image keeps the fewest tokens whose CLS attention share reaches the mass
    with torch.no_grad():
        score = own_cls_attention(model, block1_input(model)) if kind == "timm_cls" else None
    if score is not None:
        share = torch.sort(score / score.sum(1, keepdim=True), descending=True).values.cumsum(1)
        fewest = (share < 0.5).sum(1) + 1
        assert torch.equal(counts, fewest.clamp(max=32))


def test_weight_masks_and_token_pruning_combined():
    model = make_model("timm_cls")
    adapter = adapter_for(model, "timm_cls", X)
    gen = torch.Generator().manual_seed(3)
    dense = {n: p.detach() for n, p in model.named_parameters()}
    masks = {n: torch.rand(p.shape, generator=gen) < 0.5 for n, p in dense.items() if n.startswith("blocks") and n.endswith("weight") and p.dim() == 2}
    for name in ("cls_attention", "merge", "entropy_recycle"):
        setting = make_token_setting(name, 0.4, 4)
        swapped = forward(model, masked_params(dense, masks), X, intervention=intervention_factory(model, adapter, setting)).logits
        by_hand = copy.deepcopy(model)
        with torch.no_grad():
            for n, p in by_hand.named_parameters():
                if n in masks:
                    p.mul_(masks[n])
        ref = forward(by_hand, {}, X, intervention=intervention_factory(by_hand, adapter, setting)).logits
        assert torch.equal(swapped, ref), name
        unmasked = forward(model, {}, X, intervention=intervention_factory(model, adapter, setting)).logits
        assert not torch.allclose(swapped, unmasked)


def test_rollout_of_the_dense_model_matches_an_independent_product():
    model = make_model("timm_cls")
    adapter = adapter_for(model, "timm_cls", X)
    image = X[2]
    inputs = []
    handles = [blk.register_forward_pre_hook(lambda m, a: inputs.append(a[0])) for blk in model.blocks]
    with torch.no_grad():
        model(image[None])
    for h in handles:
        h.remove()
    product = torch.eye(65, dtype=torch.float64)
    for blk, x in zip(model.blocks, inputs):
        q, k, _ = blk.attn.qkv(blk.norm1(x)).reshape(1, 65, 3, 4, 8).permute(2, 0, 3, 1, 4)
        a = ((q @ k.transpose(-2, -1)) / math.sqrt(8)).softmax(-1)[0].mean(0).double()
        product = (0.5 * a + 0.5 * torch.eye(65, dtype=torch.float64)) @ product
    blocks = block_attention(model, {}, adapter, None, image)
    assert torch.allclose(attention_rollout(blocks, adapter, 64), product[0, 1:], atol=1e-6)
    pruned = block_attention(model, {}, adapter, make_token_setting("entropy_recycle", 0.25, 4), image)
    assert [b["attention"].shape[-1] for b in pruned] == [65, 18, 18, 18]
    roll = attention_rollout(pruned, adapter, 64)
    assert roll.shape == (64,) and torch.isfinite(roll).all() and roll.sum() <= 1 + 1e-9


def test_feather_covers_every_region_cls_attention_misses():
    """FEATHER's finding on the test ViT at a low budget (8 of 64 tokens at block 1): coverage =
    share of (image, quadrant) pairs keeping >= 1 token, computed here from the token maps."""
    model = make_model("timm_cls")
    adapter = adapter_for(model, "timm_cls", X)
    images = make_images(24, seed=5)
    budget = [1.0, 0.125, 0.125, 0.125]
    coverage = {}
    for name in ("cls_attention", "feather"):
        _, record = record_forward(model, {}, adapter, make_token_setting(name, budget, 4), images)
        kept = (record.status(1) == KEPT).reshape(24, 8, 8)
        quadrants = torch.stack([kept[:, :4, :4], kept[:, :4, 4:], kept[:, 4:, :4], kept[:, 4:, 4:]], 1)
        coverage[name] = quadrants.flatten(2).any(2).double().mean().item()
        assert region_coverage(record.status(1), (8, 8)) == pytest.approx(coverage[name])
        maps = retention_map(record, (8, 8))
        assert maps.shape == (4, 8, 8) and torch.allclose(maps[1].sum(), torch.tensor(8.0, dtype=torch.float64))
        assert torch.equal(token_map(record, 3, (8, 8))[1], record.status(1)[3].reshape(8, 8))
    assert coverage["feather"] == 1.0
    assert coverage["cls_attention"] < 1.0


def test_accuracy_curves_progress_and_cancel():
    model = make_model("timm_cls")
    adapter = adapter_for(model, "timm_cls", X)
    labels = torch.arange(6) % 5
    dense = forward(model, {}, X).logits
    calls = []
    table = accuracy_curves(model, {}, adapter, X, labels, ["random", "merge"], [1.0, 0.5],
                            progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)] and not table.attrs["cancelled"]
    assert table["accuracy"][0] == (dense.argmax(1) == labels).double().mean().item()
    assert table["loss"][0] == pytest.approx(F.cross_entropy(dense, labels).item())
    assert table["flops_reduction"][0] == 1.0 and table["flops_reduction"][1] > 1.5
    cancel = threading.Event()
    table = accuracy_curves(model, {}, adapter, X, labels, ["random", "merge"], [1.0, 0.5],
                            progress=lambda d, t: cancel.set(), cancel=cancel)
    assert len(table) == 1 and table.attrs["cancelled"]


@pytest.mark.parametrize("setting", [None, ("cls_attention", 0.5)])
def test_integrated_gradients_completeness_within_captum_delta(setting):
    model = make_model("timm_cls")
    adapter = adapter_for(model, "timm_cls", X)
    factory = None if setting is None else intervention_factory(model, adapter, make_token_setting(*setting, 4))
    image = X[1]
    result = attributions(model, {}, image, target=2, method="integrated_gradients", intervention=factory, n_steps=64)

    def f(x):
        with factory() if factory else torch.no_grad():
            with torch.no_grad():
                return model(x[None])[0, 2].item()

    gap = f(image) - f(torch.zeros_like(image))
    total = result["attribution"].sum().item()
    assert abs(total - gap) <= abs(result["delta"]) + 1e-4
    if setting is None:
        assert abs(result["delta"]) < 0.05 * abs(gap)


def test_saliency_and_occlusion_against_autograd_and_hand_occlusion():
    model = make_model("timm_cls")
    adapter = adapter_for(model, "timm_cls", X)
    factory = intervention_factory(model, adapter, make_token_setting("cls_attention", 0.5, 4))
    image = X[0]
    sal = attributions(model, {}, image, target=1, method="saliency", intervention=factory)
    x = image[None].clone().requires_grad_(True)
    with factory():
        model(x)[0, 1].backward()
    assert torch.allclose(sal["attribution"], x.grad[0].abs(), atol=1e-6)
    occ = attributions(model, {}, image, target=1, method="occlusion", intervention=factory, window=4)
    with torch.no_grad(), factory():
        full = model(image[None])[0, 1]
    hidden = image.clone()
    hidden[:, 4:8, 8:12] = 0
    with torch.no_grad(), factory():
        drop = full - model(hidden[None])[0, 1]
    assert torch.allclose(occ["attribution"][:, 4:8, 8:12], drop.expand(3, 4, 4), atol=1e-5)
    assert occ["prediction"] == sal["prediction"]
