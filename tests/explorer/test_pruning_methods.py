"""Every criterion's masks against an independent reference (torch.nn.utils.prune or the paper's formula)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from prunescope.explorer import Explorer
from prunescope.explorer.pruning import erk_densities, lamp_scores

SPARSITIES = [0.3, 0.7, 0.9, 0.98]


@pytest.fixture(scope="module")
def explorers() -> dict[str, Explorer]:
    return {name: Explorer.from_sample(name) for name in ("digits_mlp", "digits_cnn")}


def _modules(ex: Explorer) -> dict[str, nn.Module]:
    model = copy.deepcopy(ex.model)
    named = dict(model.named_modules())
    return {n: named[n] for n in ex.layers}


def _assert_equal_but_ties(mask: torch.Tensor, ref: torch.Tensor, score: torch.Tensor) -> None:
    """Masks agree except where the score ties with the pruning threshold (the order of ties is free)."""
    assert mask.shape == ref.shape and mask.dtype == torch.bool
    assert int(mask.sum()) == int(ref.sum())
    differ = mask != ref
    if differ.any():
        threshold = score[~ref].max() if (~ref).any() else score.min()
        assert torch.all(score[differ] == threshold), "masks differ away from a tie at the threshold"


@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_magnitude_equals_torch_l1_unstructured(explorers, name, sparsity):
    ex = explorers[name]
    masks = ex.prune("magnitude", sparsity=sparsity).masks
    for layer, module in _modules(ex).items():
        torch_prune.l1_unstructured(module, "weight", amount=sparsity)
        _assert_equal_but_ties(masks[layer], module.weight_mask.bool(), module.weight_orig.abs())


@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_global_magnitude_equals_torch_global_unstructured(explorers, name, sparsity):
    ex = explorers[name]
    masks = ex.prune("global_magnitude", sparsity=sparsity).masks
    modules = _modules(ex)
    torch_prune.global_unstructured(
        [(m, "weight") for m in modules.values()], pruning_method=torch_prune.L1Unstructured, amount=sparsity
    )
    mine = torch.cat([masks[n].flatten() for n in modules])
    ref = torch.cat([m.weight_mask.bool().flatten() for m in modules.values()])
    score = torch.cat([m.weight_orig.abs().flatten() for m in modules.values()])
    _assert_equal_but_ties(mine, ref, score)


def _lamp_reference(weight: torch.Tensor) -> np.ndarray:
    """LAMP straight from the paper, by pairwise comparison in blocks (no sorting)."""
    sq = weight.detach().double().numpy().ravel() ** 2
    out = np.empty_like(sq)
    for start in range(0, sq.size, 1024):
        block = sq[start : start + 1024]
        denominators = (sq[None, :] >= block[:, None]) @ sq
        out[start : start + 1024] = block / denominators
    return out


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_lamp_scores_match_the_formula(explorers, name):
    for module in _modules(explorers[name]).values():
        np.testing.assert_allclose(lamp_scores(module.weight).numpy().ravel(), _lamp_reference(module.weight), rtol=1e-12)


def test_lamp_scores_with_ties_follow_the_formula():
    w = torch.tensor([[1.0, -1.0, 2.0], [0.5, 2.0, -0.5]])
    np.testing.assert_allclose(lamp_scores(w).numpy().ravel(), _lamp_reference(w), rtol=1e-12)


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_lamp_masks_are_one_global_threshold_on_the_formula(explorers, sparsity):
    ex = explorers["digits_cnn"]
    masks = ex.prune("lamp", sparsity=sparsity).masks
    scores = np.concatenate([_lamp_reference(m.weight) for m in _modules(ex).values()])
    n_prune = round(sparsity * scores.size)
    threshold = np.sort(scores)[n_prune - 1]
    mine = torch.cat([masks[n].flatten() for n in ex.layers]).numpy()
    assert (~mine).sum() == n_prune
    assert np.all(scores[~mine] <= threshold) and np.all(scores[mine] >= threshold)
    # LAMP keeps every layer alive: each layer's largest weight scores 1.
    assert all(bool(m.any()) for m in masks.values())


@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9, 0.95, 0.99])
@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_erk_hits_the_global_target(explorers, name, sparsity):
    cost = explorers[name].prune("erk", sparsity=sparsity).cost()
    assert abs(cost.sparsity - sparsity) <= 0.005


def test_erk_densities_follow_the_formula_and_cap_at_one(explorers):
    layers = explorers["digits_cnn"].profile.layers
    dens = erk_densities(list(layers), 0.9)
    free = [lay for lay in layers if dens[lay.name] < 1.0]
    ratios = [dens[lay.name] / (sum(lay.weight_shape) / lay.numel) for lay in free]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-9)  # one scale for all non-dense layers
    assert all(0 < d <= 1 for d in dens.values())
    kept = sum(dens[lay.name] * lay.numel for lay in layers)
    assert kept == pytest.approx(0.1 * sum(lay.numel for lay in layers))
    assert erk_densities(list(layers), 0.2)["conv1"] == 1.0  # small first conv layer is kept dense


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.9])
def test_random_gives_exact_counts_and_is_seeded(explorers, sparsity):
    ex = explorers["digits_mlp"]
    masks = ex.prune("random", sparsity=sparsity, seed=3).masks
    for layer, mask in masks.items():
        assert int((~mask).sum()) == round(sparsity * mask.numel())
    again = ex.prune("random", sparsity=sparsity, seed=3).masks
    other = ex.prune("random", sparsity=sparsity, seed=4).masks
    assert all(torch.equal(masks[n], again[n]) for n in masks)
    assert not all(torch.equal(masks[n], other[n]) for n in masks)


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (3, 8), (1, 2)])
@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_nm_keeps_exactly_n_of_every_m_inputs(explorers, name, n, m):
    ex = explorers[name]
    masks = ex.prune("nm", n=n, m=m).masks
    for layer, mask in masks.items():
        w = ex.model.get_submodule(layer).weight
        rows = (mask.movedim(1, -1) if mask.dim() > 2 else mask).reshape(mask.shape[0], -1)
        if rows.shape[1] % m:
            assert mask.all(), f"{layer}: input size {rows.shape[1]} not divisible by {m} stays dense"
            continue
        counts = rows.reshape(rows.shape[0], -1, m).sum(-1)
        assert torch.all(counts == n)
        # the kept ones are the largest |w| of each group
        wr = (w.detach().movedim(1, -1) if w.dim() > 2 else w.detach()).reshape(w.shape[0], -1, m).abs()
        kept_min = torch.where(rows.reshape(wr.shape), wr, torch.inf).min(-1).values
        dropped_max = torch.where(~rows.reshape(wr.shape), wr, -torch.inf).max(-1).values
        assert torch.all(kept_min >= dropped_max)


def test_snip_matches_grad_times_weight(explorers):
    ex = explorers["digits_mlp"]
    masks = ex.prune("snip", sparsity=0.8, seed=5).masks
    model = copy.deepcopy(ex.model).eval()
    inputs, labels = ex.sample.data("train")
    pick = torch.randperm(len(labels), generator=torch.Generator().manual_seed(5))[:256]
    nn.functional.cross_entropy(model(inputs[pick]), labels[pick]).backward()
    modules = {n: model.get_submodule(n) for n in ex.layers}
    score = torch.cat([(m.weight.grad * m.weight).abs().flatten() for m in modules.values()])
    ref = torch.ones_like(score, dtype=torch.bool)
    ref[torch.topk(score, round(0.8 * score.numel()), largest=False).indices] = False
    mine = torch.cat([masks[n].flatten() for n in modules])
    _assert_equal_but_ties(mine, ref, score.detach())


def _compact_mlp(ex: Explorer) -> nn.Sequential:
    """The channel-pruned MLP rebuilt as a smaller dense network (the compaction, by hand)."""
    masks, layers = ex.masks, []
    kept_in = torch.ones(ex.model.fc1.in_features, dtype=torch.bool)
    for name in ex.layers:
        module, mask = ex.model.get_submodule(name), masks[name]
        kept_out = mask.any(1) if name != ex.layers[-1] else torch.ones(mask.shape[0], dtype=torch.bool)
        small = nn.Linear(int(kept_in.sum()), int(kept_out.sum()))
        small.weight.data = module.weight.detach()[kept_out][:, kept_in].clone()
        small.bias.data = module.bias.detach()[kept_out].clone()
        layers += [small, nn.ReLU()]
        kept_in = kept_out
    return nn.Sequential(*layers[:-1])


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_channel_pruning_equals_the_compacted_network(explorers, norm):
    ex = explorers["digits_mlp"].prune("channel", sparsity=0.6, norm=norm)
    small = _compact_mlp(ex)
    assert [small[0].out_features, small[2].out_features] == [120, 40]
    inputs, _ = ex.eval_data
    torch.testing.assert_close(ex.logits(), small(inputs).detach(), rtol=1e-5, atol=1e-5)
    # FLOPs are those of the compacted architecture
    compact_flops = 2 * sum(layer.in_features * layer.out_features for layer in small if isinstance(layer, nn.Linear))
    assert ex.cost().flops_effective == compact_flops
    # kept channels are the largest by norm
    w = ex.model.fc1.weight.detach()
    norms = w.abs().sum(1) if norm == "l1" else w.norm(dim=1)
    kept = ex.masks["fc1"].any(1)
    assert norms[kept].min() >= norms[~kept].max()


def test_channel_pruning_of_a_conv_removes_the_flattened_inputs_of_the_next_linear(explorers):
    ex = explorers["digits_cnn"].prune("channel", sparsity=0.5)
    kept_conv2 = ex.masks["conv2"].flatten(1).any(1)  # (32,)
    assert int(kept_conv2.sum()) == 16
    fc1_inputs = ex.masks["fc1"].any(0)  # (512,) = 32 channels x 16 pooled pixels
    assert torch.equal(fc1_inputs, kept_conv2.repeat_interleave(16))
    assert torch.equal(ex.masks["conv2"].flatten(2).any(2).any(0), ex.masks["conv1"].flatten(1).any(1))
