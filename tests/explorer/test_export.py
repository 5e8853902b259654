"""Exports: mask files, masks on a user's module via torch.nn.utils.prune, pruned and compacted weights."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils import prune

from prunescope.explorer.core.forward import forward, masked_params
from prunescope.explorer.export import (
    apply_to,
    load_masks,
    masks_bytes,
    masks_from_bytes,
    pruned_state_dict,
    save_compacted,
    save_masks,
    save_pruned_weights,
    state_dict_bytes,
)
from prunescope.sample_models import get_sample_model


def magnitude_masks(model: nn.Module, names: list[str], sparsity: float) -> dict[str, torch.Tensor]:
    """Per-tensor magnitude masks (an independent reference, not the engine's criterion)."""
    params = dict(model.named_parameters())
    masks = {}
    for name in names:
        w = params[name].detach().abs().flatten()
        k = int(sparsity * w.numel())
        keep = torch.ones_like(w, dtype=torch.bool)
        keep[torch.argsort(w)[:k]] = False
        masks[name] = keep.reshape(params[name].shape)
    return masks


class EncoderClassifier(nn.Module):
    """A 2-layer nn.TransformerEncoder over 8 tokens of the 8x8 digits, mean-pooled, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x.reshape(-1, 8, 8))  # (B, 8, 16)
        return self.head(self.enc(h).mean(1))  # (B, 10)


@pytest.fixture(scope="module")
def digits():
    return get_sample_model("digits_mlp").data("test")


def test_mask_file_round_trip_stores_uint8(tmp_path):
    torch.manual_seed(0)
    masks = {"fc1.weight": torch.rand(5, 4) > 0.5, "enc.layers.0.self_attn.in_proj_weight": torch.rand(6, 2) > 0.3}
    path = save_masks(masks, tmp_path / "m.safetensors")
    with safe_open(str(path), "pt") as f:
        assert sorted(f.keys()) == sorted(masks)
        assert f.get_tensor("fc1.weight").dtype == torch.uint8
        assert f.metadata()["format"] == "prunescope-masks"
    back = load_masks(path)
    assert back.keys() == masks.keys() and all(torch.equal(back[k], masks[k]) for k in masks)
    assert all(torch.equal(masks_from_bytes(masks_bytes(masks))[k], masks[k]) for k in masks)


def test_mask_files_are_validated(tmp_path):
    model = nn.Sequential(nn.Linear(4, 5))
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(4, 5\), the parameter \(5, 4\)"):
        load_masks(save_masks({"0.weight": torch.ones(4, 5, dtype=torch.bool)}, tmp_path / "a.safetensors"), model)
    with pytest.raises(ValueError, match="'1.weight' is not a parameter"):
        load_masks(save_masks({"1.weight": torch.ones(5, 4, dtype=torch.bool)}, tmp_path / "b.safetensors"), model)
    save_file({"0.weight": torch.full((5, 4), 2, dtype=torch.uint8)}, str(tmp_path / "c.safetensors"))
    with pytest.raises(ValueError, match="values other than 0 and 1"):
        load_masks(tmp_path / "c.safetensors")
    save_file({"0.weight": torch.ones(5, 4)}, str(tmp_path / "d.safetensors"))
    with pytest.raises(ValueError, match="is torch.float32; mask files hold uint8"):
        load_masks(tmp_path / "d.safetensors")
    data = (tmp_path / "a.safetensors").read_bytes()
    with pytest.raises(ValueError, match="truncated"):
        masks_from_bytes(data[:-5])
    with pytest.raises(ValueError, match="must be a torch.bool tensor"):
        save_masks({"0.weight": torch.ones(5, 4)}, tmp_path / "e.safetensors")


def test_apply_to_mlp_reproduces_masked_dense(digits):
    x, _ = digits
    model = get_sample_model("digits_mlp").load()
    dense = {k: v.detach().clone() for k, v in model.named_parameters()}
    masks = magnitude_masks(model, ["fc1.weight", "fc2.weight", "fc3.weight"], 0.8)
    expected = forward(model, masked_params(dense, masks), x).logits
    dense_logits = forward(model, {}, x).logits
    user = apply_to(copy.deepcopy(model), masks)
    with torch.no_grad():
        got = user.eval()(x)
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, dense_logits, atol=1e-3)  # the masks do something
    assert prune.is_pruned(user) and torch.equal(user.fc1.weight_mask.bool(), masks["fc1.weight"])
    assert all(torch.equal(model.get_parameter(k), v) for k, v in dense.items())  # the reference untouched


def test_apply_to_transformer_encoder_incl_attention_projections(digits):
    x, y = digits[0][:48], digits[1][:48]
    torch.manual_seed(0)
    model = EncoderClassifier().eval()
    names = ["embed.weight", "head.weight"] + [
        f"enc.layers.{i}.{p}" for i in range(2)
        for p in ("self_attn.in_proj_weight", "self_attn.out_proj.weight", "linear1.weight", "linear2.weight")
    ]
    masks = magnitude_masks(model, names, 0.6)
    dense = {k: v.detach().clone() for k, v in model.named_parameters()}
    params = masked_params(dense, masks)
    user = apply_to(copy.deepcopy(model), masks)
    with torch.no_grad():  # eval + no_grad: PyTorch's fused attention fast path
        assert torch.allclose(user.eval()(x), forward(model, params, x).logits, atol=1e-5)
    # with autograd on (the slow path, as in training)
    assert torch.allclose(user(x), forward(model, params, x, grad=True).logits, atol=1e-5)

    # training continues from the pruned module: pruned entries stay zero, out_proj included
    user.train()
    for _ in range(2):  # plain SGD steps (torch.optim's first import costs seconds)
        user.zero_grad()
        nn.functional.cross_entropy(user(x[:16]), y[:16]).backward()
        with torch.no_grad():
            for p in user.parameters():
                p -= 0.5 * p.grad
    user.eval()
    with torch.no_grad():
        user(x[:2])  # the pre-hooks recompute every masked weight
    for name, mask in masks.items():
        owner, leaf = name.rpartition(".")[0], name.rpartition(".")[2]
        sub = user.get_submodule(owner)
        weight, orig = getattr(sub, leaf), getattr(sub, leaf + "_orig")
        assert not torch.equal(orig.detach(), dense[name])  # it trained
        assert torch.equal(weight, orig * mask), name  # the effective weight is current and masked
        assert bool((weight[~mask] == 0).all())


def test_pruned_state_dict_loads_into_the_architecture(tmp_path, digits):
    x, _ = digits
    spec = get_sample_model("digits_cnn")
    model = spec.load()
    ximg = x.reshape(-1, 1, 8, 8)
    masks = magnitude_masks(model, list(f"{n}.weight" for n in spec.prunable_layers), 0.7)
    dense = {k: v.detach().clone() for k, v in model.named_parameters()}
    expected = forward(model, masked_params(dense, masks), ximg).logits
    path = save_pruned_weights(model, masks, tmp_path / "pruned.safetensors")
    state = load_file(str(path))
    assert state.keys() == model.state_dict().keys()
    fresh = spec.build().eval()
    fresh.load_state_dict(state)
    with torch.no_grad():
        assert torch.allclose(fresh(ximg), expected, atol=1e-5)
    for name, mask in masks.items():
        assert bool((state[name][~mask] == 0).all()) and torch.equal(state[name][mask], dense[name][mask])
    assert torch.equal(load_file(str(path))["conv1.bias"], model.conv1.bias.detach())
    from safetensors.torch import load as st_load
    assert torch.equal(st_load(state_dict_bytes(state))["fc1.weight"], state["fc1.weight"])
    # the dense snapshot wins over a module that trained on
    trained_on = copy.deepcopy(model)
    with torch.no_grad():
        trained_on.fc1.weight.add_(1.0)
    assert torch.equal(pruned_state_dict(trained_on, masks, dense={"fc1.weight": dense["fc1.weight"]})["fc1.weight"],
                       state["fc1.weight"])


class SmallMLP(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def test_save_compacted_runs_and_equals_masked_dense(tmp_path, digits):
    x, _ = digits
    torch.manual_seed(0)
    model = SmallMLP(32).eval()
    keep = torch.arange(32) % 3 != 0  # drop every third hidden unit
    masks = {"fc1.weight": keep[:, None].expand(32, 64).clone(), "fc2.weight": keep[None, :].expand(10, 32).clone()}
    dense = {k: v.detach().clone() for k, v in model.named_parameters()}
    expected = forward(model, masked_params(dense, masks), x).logits
    # compact by hand: the rows of fc1 and the columns of fc2 of the kept units
    small = SmallMLP(int(keep.sum())).eval()
    with torch.no_grad():
        small.fc1.weight.copy_(model.fc1.weight[keep])
        small.fc1.bias.copy_(model.fc1.bias[keep])
        small.fc2.weight.copy_(model.fc2.weight[:, keep])
        small.fc2.bias.copy_(model.fc2.bias)
    written = save_compacted(small, tmp_path / "small", example_inputs=(x[:4],), pickle_module=True)
    assert set(written) == {"state_dict", "program", "module"} and all(p.is_file() for p in written.values())
    rebuilt = SmallMLP(int(keep.sum())).eval()
    rebuilt.load_state_dict(load_file(str(written["state_dict"])))
    program = torch.export.load(str(written["program"])).module()
    pickled = torch.load(written["module"], weights_only=False)  # our own file, trusted
    with torch.no_grad():
        for runnable in (small, rebuilt, program, pickled):
            assert torch.allclose(runnable(x), expected, atol=1e-5)  # 540 samples: not the export batch
    only_state = save_compacted(small, tmp_path / "plain.safetensors")
    assert set(only_state) == {"state_dict"} and only_state["state_dict"].name == "plain.safetensors"


@pytest.mark.parametrize("method, options", [("magnitude", {"sparsity": 0.8}), ("channel", {"sparsity": 0.5})])
def test_explorer_masks_applied_with_custom_from_mask_reproduce_its_logits(method, options):
    from prunescope.explorer import Explorer

    ex = Explorer.from_sample("digits_cnn").prune(method, **options)
    x, _ = ex.eval_data
    user = apply_to(copy.deepcopy(ex.model), ex.masks)
    with torch.no_grad():
        assert torch.allclose(user.eval()(x), ex.logits(), atol=1e-5)
    assert not torch.allclose(ex.logits(), Explorer.from_sample("digits_cnn").logits(), atol=1e-3)


def test_save_compacted_of_a_graph_compacted_cnn(tmp_path, digits):
    """digits_cnn with half the channels of each prunable group removed (core.graph + core.compact):
    the saved program and state dict give the masked-dense logits within 1e-5."""
    from prunescope.explorer.core.compact import compact_model, group_masks, group_scores
    from prunescope.explorer.core.graph import channel_groups

    x = digits[0].reshape(-1, 1, 8, 8)
    spec = get_sample_model("digits_cnn")
    model = spec.load()
    dense = {k: v.detach().clone() for k, v in model.named_parameters()}
    groups = channel_groups(model, x[:2], weights=[f"{n}.weight" for n in spec.prunable_layers])
    scores = group_scores(groups, dense)
    keep = {}
    for i, s in scores.items():
        k = torch.zeros(len(s), dtype=torch.bool)
        k[torch.argsort(s, descending=True)[: len(s) // 2]] = True
        keep[i] = k
    assert keep, "digits_cnn has prunable channel groups"
    masks = group_masks(groups, keep, {k: tuple(v.shape) for k, v in dense.items()})
    expected = forward(model, masked_params(dense, masks), x).logits
    small = compact_model(model, groups, keep)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    written = save_compacted(small, tmp_path / "cnn", example_inputs=(x[:4],))
    program = torch.export.load(str(written["program"])).module()
    state = load_file(str(written["state_dict"]))
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in small.state_dict().items()}
    with torch.no_grad():
        assert torch.allclose(program(x), expected, atol=1e-5)
        assert torch.allclose(small.eval()(x), expected, atol=1e-5)


def test_apply_to_twice_combines_masks_like_torch_prune():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5))
    a, b = torch.rand(5, 6) > 0.3, torch.rand(5, 6) > 0.3
    apply_to(model, {"0.weight": a})
    apply_to(model, {"0.weight": b})
    assert torch.equal(model[0].weight_mask.bool(), a & b)
    assert torch.equal(model[0].weight, model[0].weight_orig * (a & b))
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(6, 5\), the parameter \(5, 6\)"):
        apply_to(model, {"0.weight": torch.ones(6, 5, dtype=torch.bool)})


def test_out_proj_hook_is_added_once_and_steps_aside_after_prune_remove():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    mask = torch.rand(8, 8) > 0.5
    apply_to(mha, {"out_proj.weight": mask})
    apply_to(mha, {"out_proj.weight": mask})
    assert len(mha._forward_pre_hooks) == 1
    with torch.no_grad():
        mha.out_proj.weight_orig.add_(1.0)  # as an optimizer step would
    x = torch.randn(2, 3, 8)
    mha(x, x, x)
    assert torch.equal(mha.out_proj.weight, mha.out_proj.weight_orig * mask)
    prune.remove(mha.out_proj, "weight")
    mha(x, x, x)  # the hook is now a no-op
    assert isinstance(mha.out_proj.weight, nn.Parameter) and bool((mha.out_proj.weight[~mask] == 0).all())
