"""Every criterion's masks against an independent reference (torch.nn.utils.prune or the paper's
formula); the registry; and no method-name branches outside the pruning package."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from prunescope.explorer import Explorer
from prunescope.explorer.pruning import (
    METHODS,
    PruningMethod,
    erk_densities,
    get_method,
    lamp_scores,
    register_method,
    unregister_method,
)
from prunescope.explorer.viewmodel import view_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPARSITIES = [0.3, 0.7, 0.9, 0.98]


@pytest.fixture(scope="module")
def explorers() -> dict[str, Explorer]:
    return {name: Explorer.from_sample(name) for name in ("digits_mlp", "digits_cnn")}


def _modules(ex: Explorer) -> dict[str, nn.Module]:
    """``{weight name: its module}`` in a deep copy of the model (every weight here is a ``.weight``)."""
    model = copy.deepcopy(ex.model)
    named = dict(model.named_modules())
    return {n: named[n.removesuffix(".weight")] for n in ex.weights}


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


def _lamp_reference(weight: torch.Tensor, entries: np.ndarray | None = None) -> np.ndarray:
    """LAMP straight from the paper, by pairwise comparison in blocks (no sorting), at ``entries``
    of the flattened tensor (default: all)."""
    sq = weight.detach().double().numpy().ravel() ** 2
    chosen = sq if entries is None else sq[entries]
    out = np.empty_like(chosen)
    for start in range(0, chosen.size, 256):
        block = chosen[start : start + 256]
        denominators = (sq[None, :] >= block[:, None]).astype(np.float64) @ sq
        out[start : start + 256] = block / denominators
    return out


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_lamp_scores_match_the_formula(explorers, name):
    rng = np.random.default_rng(0)
    for module in _modules(explorers[name]).values():
        w = module.weight
        entries = rng.choice(w.numel(), size=min(w.numel(), 1024), replace=False)  # each against the whole tensor
        np.testing.assert_allclose(lamp_scores(w).numpy().ravel()[entries], _lamp_reference(w, entries), rtol=1e-12)


def test_lamp_scores_with_ties_follow_the_formula():
    w = torch.tensor([[1.0, -1.0, 2.0], [0.5, 2.0, -0.5]])
    np.testing.assert_allclose(lamp_scores(w).numpy().ravel(), _lamp_reference(w), rtol=1e-12)


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_lamp_masks_are_one_global_threshold_on_the_formula(explorers, sparsity):
    ex = explorers["digits_cnn"]
    masks = ex.prune("lamp", sparsity=sparsity).masks
    scores = np.concatenate([lamp_scores(m.weight).numpy().ravel() for m in _modules(ex).values()])  # checked above
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
    assert erk_densities(list(layers), 0.2)["conv1.weight"] == 1.0  # small first conv layer is kept dense


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
        w = ex.model.get_parameter(layer)
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
    modules = {n: model.get_submodule(n.removesuffix(".weight")) for n in ex.weights}
    score = torch.cat([(m.weight.grad * m.weight).abs().flatten() for m in modules.values()])
    ref = torch.ones_like(score, dtype=torch.bool)
    ref[torch.topk(score, round(0.8 * score.numel()), largest=False).indices] = False
    mine = torch.cat([masks[n].flatten() for n in modules])
    _assert_equal_but_ties(mine, ref, score.detach())


def _compact_mlp(ex: Explorer) -> nn.Sequential:
    """The channel-pruned MLP rebuilt as a smaller dense network (the compaction, by hand)."""
    masks, layers = ex.masks, []
    kept_in = torch.ones(ex.model.fc1.in_features, dtype=torch.bool)
    for name in ex.weights:
        module, mask = ex.model.get_submodule(name.removesuffix(".weight")), masks[name]
        kept_out = mask.any(1) if name != ex.weights[-1] else torch.ones(mask.shape[0], dtype=torch.bool)
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
    kept = ex.masks["fc1.weight"].any(1)
    assert norms[kept].min() >= norms[~kept].max()


def test_channel_pruning_of_a_conv_removes_the_flattened_inputs_of_the_next_linear(explorers):
    ex = explorers["digits_cnn"].prune("channel", sparsity=0.5)
    kept_conv2 = ex.masks["conv2.weight"].flatten(1).any(1)  # (32,)
    assert int(kept_conv2.sum()) == 16
    fc1_inputs = ex.masks["fc1.weight"].any(0)  # (512,) = 32 channels x 16 pooled pixels
    assert torch.equal(fc1_inputs, kept_conv2.repeat_interleave(16))
    assert torch.equal(ex.masks["conv2.weight"].flatten(2).any(2).any(0), ex.masks["conv1.weight"].flatten(1).any(1))


# ----------------------------------------------------------------------------- the registry
def test_registering_a_taken_name_is_an_error():
    class Again(PruningMethod):
        name = "lamp"

    with pytest.raises(ValueError, match="pruning method 'lamp' is already registered"):
        register_method(Again)
    assert type(METHODS["lamp"]).__name__ == "LAMP"
    with pytest.raises(ValueError, match="needs a non-empty name"):
        register_method(type("Nameless", (PruningMethod,), {}))


class SmallestFirst(PruningMethod):
    """A plug-in registered after import: keeps the *smallest* |w| (a deliberately bad criterion)."""

    name = "smallest_first"
    display_name = "Smallest first (test plug-in)"
    description = "Keeps the smallest |w| of each tensor."

    def scores(self, ctx, options):
        return {n: -w.abs() for n, w in ctx.weights.items()}


@pytest.fixture
def plugin():
    register_method(SmallestFirst)
    yield METHODS["smallest_first"]
    unregister_method("smallest_first")


def test_a_method_registered_later_is_accepted_everywhere(explorers, plugin):
    ex = explorers["digits_mlp"]
    assert "smallest_first" in ex.methods
    masks = ex.prune("smallest_first", sparsity=0.7).masks
    w = ex.dense_weights["fc2.weight"].abs().flatten()
    removed = torch.topk(w, round(0.7 * w.numel())).indices  # the largest go
    assert not masks["fc2.weight"].flatten()[removed].any()
    assert int((~masks["fc2.weight"]).sum()) == removed.numel()
    vm = view_model(ex)
    assert vm.method == "smallest_first" and vm.methods["Smallest first (test plug-in)"] == "smallest_first"
    assert vm.description == SmallestFirst.description
    assert ex.evaluate().accuracy < ex.prune("magnitude", sparsity=0.7).evaluate().accuracy


def test_an_unregistered_method_is_refused(explorers, plugin):
    unregister_method("smallest_first")
    with pytest.raises(ValueError, match="unknown pruning method 'smallest_first'"):
        explorers["digits_mlp"].prune("smallest_first", sparsity=0.5)
    register_method(SmallestFirst)  # the fixture unregisters it again


# ----------------------------------------------------------------------------- no method-name branches
ROOT = Path(__file__).resolve().parents[2]
#: String comparisons that look like method names but are not (each with its reason).
NOT_METHOD_NAMES = {
    ("explorer/sparse_exec.py", 'fmt["format"] == "nm"'): "an execution format the method returns, not its name",
    ("explorer/lottery/imp.py", 'kind == "random"'): "a lottery control kind (random re-initialisation)",
    ("explorer/lottery/imp.py", 'kind != "random"'): "a lottery control kind (random re-initialisation)",
    ("explorer/lottery/figures.py", 'source[0] == "ticket"'): "a mask-source tag ('ticket' | 'criterion')",
    ("explorer/app/tickets_view/search.py", 'info["kind"] == "ticket"'): "a run record kind (ticket/reinit/random)",
    ("explorer/app/tickets_view/view.py", "kind == 'ticket'"): "a run record kind, in a pandas query",
    ("explorer/app/tickets_view/view.py", 'for kind, title in (("ticket"'): "the run record kinds, listed",
}


def _method_name_comparisons(names: list[str], root: Path = ROOT) -> list[str]:
    quoted = "|".join(re.escape(n) for n in names)
    literal = rf"""(['"])(?:{quoted})\1"""
    patterns = [
        re.compile(rf"(?:==|!=)\s*{literal}"),  # x == "nm"
        re.compile(rf"{literal}\s*(?:==|!=)"),  # "nm" == x
        re.compile(rf"\b(?:not\s+)?in\s*[(\[{{][^)\]}}]*{literal}"),  # x in ("nm", "channel")
        re.compile(rf"^\s*case\s+{literal}"),  # match/case
        re.compile(rf"\.(?:startswith|endswith)\(\s*{literal}"),
    ]
    found = []
    for folder in ("explorer", "widgets"):
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel.startswith("explorer/pruning/"):
                continue
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if any(p.search(line) for p in patterns):
                    if not any(rel == f and snippet in line for f, snippet in NOT_METHOD_NAMES):
                        found.append(f"{rel}:{number}: {line.strip()}")
    return found


def test_no_method_name_string_comparisons_outside_the_pruning_package():
    """Views and the engine ask the method (fixed sparsity, structure, format...), never its name."""
    assert _method_name_comparisons(list(METHODS)) == []


def test_the_name_check_finds_what_it_looks_for(tmp_path):
    """The check itself, on a planted tree: branches on method names are found (so the test above
    can fail), except inside explorer/pruning and the listed non-method strings."""
    (tmp_path / "explorer" / "pruning").mkdir(parents=True)
    (tmp_path / "widgets").mkdir()
    (tmp_path / "explorer" / "a.py").write_text(
        'def f(method):\n    return method == "channel" or method in ("lamp", "x")\n'
        'ok = fmt["format"] == "nm"\n'
    )
    (tmp_path / "widgets" / "b.py").write_text('if "nm" != state.method:\n    pass\nmatch m:\n    case "snip":\n        pass\n')
    (tmp_path / "explorer" / "pruning" / "c.py").write_text('if name == "nm":\n    pass\n')
    assert _method_name_comparisons(list(METHODS), root=tmp_path) == [
        'explorer/a.py:2: return method == "channel" or method in ("lamp", "x")',
        'explorer/a.py:3: ok = fmt["format"] == "nm"',  # exempt only in sparse_exec.py
        'widgets/b.py:1: if "nm" != state.method:',
        'widgets/b.py:4: case "snip":',
    ]
