"""prune_step against torch.nn.utils.prune; the sparsity schedule of R rounds; criteria checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as tprune

from prunescope.explorer.lottery.prune import (
    check_fraction, intersect, prune_step, random_mask_like, schedule_fraction,
)


def _weights(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {"fc1.weight": torch.randn(30, 20, generator=gen), "fc2.weight": torch.randn(10, 30, generator=gen) * 0.5}


def _modules(weights):
    mods = {}
    for n, w in weights.items():
        lin = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(w)
        mods[n] = lin
    return mods


def test_global_magnitude_two_rounds_equal_torch_prune():
    w = _weights()
    mods = _modules(w)
    ones = {n: torch.ones(v.shape, dtype=torch.bool) for n, v in w.items()}
    m1 = prune_step("global_magnitude", w, ones, 0.3, 0)
    m2 = prune_step("global_magnitude", {n: v * m1[n] for n, v in w.items()}, m1, 0.3, 0)
    params = [(mod, "weight") for mod in mods.values()]
    total = sum(v.numel() for v in w.values())
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=round(0.3 * total))
    ref1 = {n: mods[n].weight_mask.bool().clone() for n in w}
    # torch's iterative pruning applies the amount to the weights still unpruned
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=round(0.3 * int(sum(m.sum() for m in m1.values()))))
    for n in w:
        assert torch.equal(m1[n], ref1[n]) and torch.equal(m2[n], mods[n].weight_mask.bool())


def test_layerwise_magnitude_equals_torch_l1_unstructured():
    w = _weights(1)
    ones = {n: torch.ones(v.shape, dtype=torch.bool) for n, v in w.items()}
    got = prune_step("magnitude", w, ones, 0.45, 0)
    for n, v in w.items():
        lin = _modules({n: v})[n]
        tprune.l1_unstructured(lin, "weight", amount=0.45)
        assert torch.equal(got[n], lin.weight_mask.bool())


@pytest.mark.parametrize("criterion", ["global_magnitude", "magnitude", "lamp", "random"])
@pytest.mark.parametrize("p,rounds", [(0.2, 7), (0.35, 5), (0.07, 9)])
def test_sparsity_after_r_rounds(criterion, p, rounds):
    w = _weights(2)
    masks = {n: torch.ones(v.shape, dtype=torch.bool) for n, v in w.items()}
    for level in range(1, rounds + 1):
        prev = masks
        masks = prune_step(criterion, {n: v * masks[n] for n, v in w.items()}, masks,
                           schedule_fraction(criterion, masks, p, level), level)
        assert all(not (masks[n] & ~prev[n]).any() for n in w)  # pruned weights stay pruned
    target = (1 - p) ** rounds
    if criterion in ("global_magnitude", "lamp"):
        total = sum(v.numel() for v in w.values())
        assert abs(sum(int(m.sum()) for m in masks.values()) - total * target) <= 1
    else:
        for n, m in masks.items():
            assert abs(int(m.sum()) - m.numel() * target) <= 1, n


def test_random_mask_like_and_intersect():
    w = _weights(3)
    ones = {n: torch.ones(v.shape, dtype=torch.bool) for n, v in w.items()}
    m = prune_step("magnitude", w, ones, 0.6, 0)
    r = random_mask_like(m, 5)
    assert all(int(r[n].sum()) == int(m[n].sum()) for n in m) and not torch.equal(r["fc1.weight"], m["fc1.weight"])
    assert torch.equal(random_mask_like(m, 5)["fc2.weight"], r["fc2.weight"])
    both = intersect([m, r])
    assert torch.equal(both["fc1.weight"], m["fc1.weight"] & r["fc1.weight"])


def test_bad_fraction_and_criterion():
    for bad in (0, 1, -0.1, 1.5, "x", None):
        with pytest.raises(ValueError, match=r"\(0, 1\)"):
            check_fraction(bad)
    w = _weights()
    ones = {n: torch.ones(v.shape, dtype=torch.bool) for n, v in w.items()}
    for criterion in ("erk", "nm", "channel"):
        with pytest.raises(ValueError, match="allocates sparsity its own way"):
            prune_step(criterion, w, ones, 0.2, 0)
    with pytest.raises(ValueError, match="unknown pruning method"):
        prune_step("nope", w, ones, 0.2, 0)
