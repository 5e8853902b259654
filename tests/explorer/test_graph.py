"""Channel groups through the traced graph, checked against compacted networks and FlopCounterMode."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunescope.explorer.core.compact import compact_model, count_flops, group_masks, group_scores
from prunescope.explorer.core.forward import forward, masked_params
from prunescope.explorer.core.graph import ChannelGroup, Member, channel_groups
from prunescope.sample_models import get_sample_model
from prunescope.sample_models.architectures import BasicBlock


# -- models ---------------------------------------------------------------------------------
class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=True)
        self.stem_bn = nn.BatchNorm2d(8)
        self.block1 = BasicBlock(8, 8, 1)
        self.block2 = BasicBlock(8, 16, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem_bn(self.stem(x)))  # (B, 8, 8, 8)
        x = self.block2(self.block1(x))  # (B, 16, 4, 4)
        return self.fc(self.pool(x).view(x.size(0), -1))  # (B, 16, 1, 1) -> (B, 10)


class TinyMobileNet(nn.Module):
    """Conv, depthwise-separable conv, one inverted residual block (MobileNetV2), Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=True)
        self.dw_bn = nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 16, 1, bias=False)
        self.pw_bn = nn.BatchNorm2d(16)
        self.expand = nn.Conv2d(16, 32, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(32)
        self.dw2 = nn.Conv2d(32, 32, 3, stride=1, padding=1, groups=32, bias=False)
        self.dw2_bn = nn.BatchNorm2d(32)
        self.project = nn.Conv2d(32, 16, 1, bias=True)
        self.project_bn = nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.stem_bn(self.stem(x)))  # (B, 8, 8, 8)
        x = F.relu6(self.dw_bn(self.dw(x)))  # (B, 8, 8, 8)
        x = self.pw_bn(self.pw(x))  # (B, 16, 8, 8)
        h = F.relu6(self.expand_bn(self.expand(x)))  # (B, 32, 8, 8)
        h = F.relu6(self.dw2_bn(self.dw2(h)))
        x = x + self.project_bn(self.project(h))  # (B, 16, 8, 8)
        return self.head(x.mean(dim=(2, 3)))  # (B, 10)


class MLP(nn.Module):
    """A plain chain; ``fc2`` is applied twice (shared weights tie its inputs to its outputs)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(20, 24)
        self.fc2 = nn.Linear(24, 24)
        self.drop = nn.Dropout(0.1)
        self.fc3 = nn.Linear(24, 12)
        self.fc4 = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x))  # (B, 24)
        x = F.gelu(self.fc2(x))
        x = self.drop(torch.tanh(self.fc2(x)))  # fc2 again: (B, 24)
        x = F.relu(self.fc3(x))  # (B, 12)
        return self.fc4(x)  # (B, 5)


class Branchy(nn.Module):
    """Data-dependent control flow: not traceable."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.fc(x)
        return -x


class Concat(nn.Module):
    """Two branches concatenated (not understood), then a conv and a head (understood)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 1)
        self.c = nn.Conv2d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([torch.relu(self.a(x)), self.b(x)], dim=1)  # (B, 8, 8, 8)
        y = F.max_pool2d(torch.relu(self.c(y)), 2)  # (B, 6, 4, 4)
        return self.fc(y.view(y.size(0), -1))


class Mixed(nn.Module):
    """Sequential, in-place ReLU and +=, module and functional pooling, nn.Flatten, BatchNorm1d."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.conv = nn.Conv2d(6, 6, 3, padding=1)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(6 * 2 * 2, 16)
        self.bn = nn.BatchNorm1d(16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, 6, 4, 4)
        y = self.conv(x)
        y += x
        y = self.flatten(F.avg_pool2d(y, 2))  # (B, 24): 4 features per channel
        return self.fc2(F.silu(self.bn(self.fc1(y))) * 2.0)  # (B, 10)


class Sequence1d(nn.Module):
    """Conv1d + BatchNorm1d, a float argument, interpolation and a residual 1x1 conv, max over time."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 8, 3)
        self.bn = nn.BatchNorm1d(8)
        self.mix = nn.Conv1d(8, 8, 1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor, scale: float = 1.5) -> torch.Tensor:
        y = F.relu(self.bn(self.conv(x))) * scale  # (B, 8, L - 2)
        y = F.interpolate(y, scale_factor=2.0)  # (B, 8, 2L - 4)
        return self.fc(torch.amax(self.mix(y) + y, dim=-1))  # (B, 2)


def _images(n: int = 6, channels: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, channels, 8, 8, generator=torch.Generator().manual_seed(seed))


def _randomise_bn(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so removed channels' shifts would show."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=gen))
                m.bias.copy_(torch.randn(m.num_features, generator=gen))
    return model.eval()


def _by_producers(groups: list[ChannelGroup]) -> dict[frozenset, ChannelGroup]:
    return {frozenset(m.param.removesuffix(".weight") for m in g.producers): g for g in groups}


def _names(members) -> set[str]:
    return {m.param for m in members}


# -- group structure ------------------------------------------------------------------------
def test_resnet_groups_follow_the_skip_connections():
    groups = channel_groups(TinyResNet(), _images())
    by = _by_producers(groups)
    assert set(by) == {
        frozenset({"stem", "block1.conv2"}), frozenset({"block1.conv1"}), frozenset({"block2.conv1"}),
        frozenset({"block2.conv2", "block2.shortcut.0"}), frozenset({"fc"}),
    }
    trunk = by[frozenset({"stem", "block1.conv2"})]
    assert trunk.prunable and trunk.channels == 8
    assert _names(trunk.consumers) == {"block1.conv1.weight", "block2.conv1.weight", "block2.shortcut.0.weight"}
    assert {"stem.bias", "stem_bn.running_mean", "stem_bn.running_var", "block1.bn2.weight",
            "block1.bn2.bias"} <= _names(trunk.followers)
    down = by[frozenset({"block2.conv2", "block2.shortcut.0"})]
    assert down.prunable and down.channels == 16
    assert down.consumers == (Member("fc.weight", 1, 1),)  # global pool: one feature per channel
    assert _names(down.followers) >= {"block2.bn2.weight", "block2.shortcut.1.running_var"}
    assert _names(by[frozenset({"block1.conv1"})].consumers) == {"block1.conv2.weight"}
    head = by[frozenset({"fc"})]
    assert not head.prunable and "model output" in head.reason
    assert [g.index for g in groups] == list(range(len(groups)))
    assert "prunable" in trunk.describe() and "kept dense" in head.describe()


def test_mobilenet_depthwise_convs_follow_their_input_channels():
    by = _by_producers(channel_groups(TinyMobileNet(), _images()))
    assert set(by) == {frozenset({"stem"}), frozenset({"pw", "project"}), frozenset({"expand"}), frozenset({"head"})}
    stem = by[frozenset({"stem"})]
    assert stem.prunable and _names(stem.consumers) == {"pw.weight"}
    assert {"dw.weight", "dw.bias", "dw_bn.running_mean", "stem_bn.weight"} <= _names(stem.followers)
    trunk = by[frozenset({"pw", "project"})]
    assert trunk.prunable and _names(trunk.consumers) == {"expand.weight", "head.weight"}
    expand = by[frozenset({"expand"})]
    assert "dw2.weight" in _names(expand.followers) and _names(expand.consumers) == {"project.weight"}
    assert not by[frozenset({"head"})].prunable


def test_mlp_chain_and_shared_layer():
    by = _by_producers(channel_groups(MLP(), torch.randn(4, 20)))
    # fc2 reads what fc1 and fc2 write: one group of 24 channels
    assert set(by) == {frozenset({"fc1", "fc2"}), frozenset({"fc3"}), frozenset({"fc4"})}
    assert _names(by[frozenset({"fc1", "fc2"})].consumers) == {"fc2.weight", "fc3.weight"}
    assert by[frozenset({"fc3"})].consumers == (Member("fc4.weight", 1, 1),)
    assert not by[frozenset({"fc4"})].prunable


def test_digits_cnn_flatten_layout():
    sample = get_sample_model("digits_cnn")
    groups = channel_groups(sample.build(), sample.data("test")[0][:4])
    assert [[m.param for m in g.producers] for g in groups] == [["conv1.weight"], ["conv2.weight"], ["fc1.weight"], ["fc2.weight"]]
    assert [g.prunable for g in groups] == [True, True, True, False]
    assert groups[1].consumers == (Member("fc1.weight", 1, 16),)
    # independent layout: flatten a (1, 32, 4, 4) map holding each entry's channel index
    channel_of_feature = torch.arange(32).reshape(1, 32, 1, 1).expand(1, 32, 4, 4).flatten(1)[0]
    keep = torch.rand(32, generator=torch.Generator().manual_seed(3)) > 0.5
    shapes = {n: tuple(p.shape) for n, p in sample.build().named_parameters()}
    masks = group_masks(groups, {1: keep}, shapes)
    assert torch.equal(masks["fc1.weight"], keep[channel_of_feature].expand(64, -1))
    assert torch.equal(masks["conv2.weight"], keep.reshape(32, 1, 1, 1).expand(32, 16, 3, 3))


def test_mixed_layers():
    by = _by_producers(channel_groups(Mixed(), _images()))
    assert set(by) == {frozenset({"features.0", "conv"}), frozenset({"fc1"}), frozenset({"fc2"})}
    assert _names(by[frozenset({"features.0", "conv"})].consumers) == {"conv.weight", "fc1.weight"}
    assert Member("fc1.weight", 1, 4) in by[frozenset({"features.0", "conv"})].consumers
    assert {"bn.running_var", "fc1.bias"} <= _names(by[frozenset({"fc1"})].followers)


def test_sequence_model_groups():
    by = _by_producers(channel_groups(Sequence1d(), torch.randn(2, 3, 10)))
    assert set(by) == {frozenset({"conv", "mix"}), frozenset({"fc"})}
    assert _names(by[frozenset({"conv", "mix"})].consumers) == {"mix.weight", "fc.weight"}


def test_weights_restricts_producers():
    model = TinyResNet()
    names = [n for n, p in model.named_parameters() if p.dim() > 1 and n != "block1.conv2.weight"]
    by = _by_producers(channel_groups(model, _images(), weights=names))
    trunk = by[frozenset({"stem", "block1.conv2"})]
    assert not trunk.prunable and "block1.conv2.weight" in trunk.reason
    assert "consumer block1.conv2.weight" in by[frozenset({"block1.conv1"})].reason  # its columns would go
    assert by[frozenset({"block2.conv1"})].prunable
    # block2's second conv and shortcut write the channels the (excluded) head reads
    no_head = [n for n in names if n != "fc.weight"]
    down = _by_producers(channel_groups(model, _images(), weights=no_head))[frozenset({"block2.conv2", "block2.shortcut.0"})]
    assert not down.prunable and "consumer fc.weight" in down.reason
    with pytest.raises(ValueError, match="nope.weight"):
        channel_groups(model, _images(), weights=["nope.weight"])


# -- masked-dense == compacted --------------------------------------------------------------
def _digits_cnn() -> nn.Module:
    return get_sample_model("digits_cnn").build()


CASES = {
    "resnet": (TinyResNet, lambda: _images(8)),
    "mobilenet": (TinyMobileNet, lambda: _images(8)),
    "mlp": (MLP, lambda: torch.randn(8, 20, generator=torch.Generator().manual_seed(1))),
    "mixed": (Mixed, lambda: _images(8)),
    "shapes_vit": (lambda: get_sample_model("shapes_vit").build(), lambda: get_sample_model("shapes_vit").data("test")[0][:4]),
    "sequence1d": (Sequence1d, lambda: torch.randn(6, 3, 10, generator=torch.Generator().manual_seed(2))),
    "digits_cnn": (_digits_cnn, lambda: get_sample_model("digits_cnn").data("test")[0][:16]),
}


def _random_keep(groups: list[ChannelGroup], seed: int) -> dict[int, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    keep = {}
    for g in groups:
        if g.prunable:
            k = torch.rand(g.channels, generator=gen) > 0.5
            k[torch.randint(g.channels, (1,), generator=gen)] = True
            keep[g.index] = k
    return keep


@pytest.mark.parametrize("case, seed", [(c, s) for c in CASES for s in (0, 1) if (c, s) != ("shapes_vit", 1)])
def test_masked_dense_equals_compacted(case, seed):
    build, make_inputs = CASES[case]
    torch.manual_seed(seed)
    model = _randomise_bn(build(), seed)
    x = make_inputs()
    groups = channel_groups(model, x)
    keep = _random_keep(groups, seed)
    assert keep and any(not k.all() for k in keep.values())
    dense = {n: p.detach() for n, p in model.named_parameters()}
    before = {n: t.clone() for n, t in model.state_dict().items()}
    masks = group_masks(groups, keep, {n: tuple(t.shape) for n, t in dense.items()})
    masked = forward(model, masked_params(dense, masks), x).logits
    small = compact_model(model, groups, keep).eval()
    with torch.no_grad():
        compact = small(x)
    torch.testing.assert_close(compact, masked, atol=1e-5, rtol=1e-5)
    # the user's model is untouched, the masks keep exactly the compacted weights
    assert all(torch.equal(before[n], t) for n, t in model.state_dict().items())
    small_params = dict(small.named_parameters())
    for name, mask in masks.items():
        assert int(mask.sum()) == small_params[name].numel(), name
    shrunk = {n for n, p in small_params.items() if p.dim() > 1 and p.shape != dense[n].shape}
    assert shrunk <= set(masks)  # every smaller weight (depthwise convs too) has its mask
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    # FLOPs: fewer when channels go, the dense count when every channel is kept
    dense_flops = count_flops(model, x)
    assert count_flops(small, x) < dense_flops
    everything = {g.index: torch.ones(g.channels, dtype=torch.bool) for g in groups if g.prunable}
    assert count_flops(compact_model(model, groups, everything), x) == dense_flops


def test_every_consumer_must_mask_its_columns():
    """Masking the shortcut's rows but not its input columns would compute another network."""
    model = _randomise_bn(TinyResNet(), 2)
    x = _images(8)
    groups = channel_groups(model, x)
    keep = _random_keep(groups, 2)
    dense = {n: p.detach() for n, p in model.named_parameters()}
    shapes = {n: tuple(t.shape) for n, t in dense.items()}
    trunk = next(g for g in groups if "block2.shortcut.0.weight" in _names(g.consumers))
    partial = [dataclasses.replace(g, consumers=tuple(m for m in g.consumers if "shortcut" not in m.param))
               if g is trunk else g for g in groups]
    with torch.no_grad():
        compact = compact_model(model, groups, keep).eval()(x)
    wrong = forward(model, masked_params(dense, group_masks(partial, keep, shapes)), x).logits
    assert not torch.allclose(wrong, compact, atol=1e-3)


def test_mlp_flops_match_an_analytic_count():
    model = MLP()
    x = torch.randn(3, 20)
    groups = channel_groups(model, x)
    keep = _random_keep(groups, 5)
    small = compact_model(model, groups, keep)
    h = {g.index: int(k.sum()) for g, k in ((groups[i], keep[i]) for i in keep)}
    by = {frozenset(m.param for m in g.producers): g.index for g in groups}
    wide, mid = h[by[frozenset({"fc1.weight", "fc2.weight"})]], h[by[frozenset({"fc3.weight"})]]
    # 2 FLOPs per multiply-add: fc1, fc2 (twice), fc3, fc4
    assert count_flops(small, x) == 2 * (20 * wide + 2 * wide * wide + wide * mid + mid * 5)
    assert count_flops(model, x) == 2 * (20 * 24 + 2 * 24 * 24 + 24 * 12 + 12 * 5)


def test_group_scores_aggregate_producer_norms():
    model = TinyResNet()
    groups = channel_groups(model, _images())
    weights = {n: p.detach() for n, p in model.named_parameters()}
    trunk = next(g for g in groups if len(g.producers) == 2 and g.channels == 8)
    stem, conv2 = weights["stem.weight"], weights["block1.conv2.weight"]
    l1 = group_scores(groups, weights, "l1")
    l2 = group_scores(groups, weights, "l2")
    for c in range(8):
        assert l1[trunk.index][c].item() == pytest.approx(float(stem[c].abs().sum() + conv2[c].abs().sum()), rel=1e-6)
        both = torch.cat([stem[c].flatten(), conv2[c].flatten()])
        assert l2[trunk.index][c].item() == pytest.approx(float(torch.linalg.vector_norm(both)), rel=1e-6)
    assert set(l1) == {g.index for g in groups if g.prunable}
    with pytest.raises(ValueError, match="'l3'"):
        group_scores(groups, weights, "l3")


# -- what is not understood -----------------------------------------------------------------
def test_data_dependent_control_flow_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot trace Branchy.*control flow"):
        channel_groups(Branchy(), torch.randn(2, 4))


def test_concat_keeps_its_groups_dense_with_a_reason():
    model = Concat()
    x = _images(4)
    groups = channel_groups(model, x)
    by = _by_producers(groups)
    for name in ("a", "b"):
        assert not by[frozenset({name})].prunable
        assert "torch.cat" in by[frozenset({name})].reason and "'cat'" in by[frozenset({name})].reason
    c = by[frozenset({"c"})]
    assert c.prunable and c.consumers == (Member("fc.weight", 1, 16),)  # view(B, -1) after max-pool
    with pytest.raises(ValueError, match="not prunable"):
        group_masks(groups, {by[frozenset({"a"})].index: torch.ones(4, dtype=torch.bool)}, {})
    keep = {c.index: torch.tensor([True, False, True, False, False, True])}
    masks = group_masks(groups, keep, {n: tuple(p.shape) for n, p in model.named_parameters()})
    dense = {n: p.detach() for n, p in model.named_parameters()}
    with torch.no_grad():
        compact = compact_model(model, groups, keep)(x)
    torch.testing.assert_close(compact, forward(model, masked_params(dense, masks), x).logits, atol=1e-5, rtol=1e-5)


class _Odd(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.LayerNorm(4)
        self.scale = nn.Parameter(torch.ones(1, 4, 1, 1))
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.grouped = nn.Conv2d(4, 4, 1, groups=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)  # (B, 4, 8, 8)
        if self.kind == "layernorm":
            y = self.norm(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        elif self.kind == "scale":
            y = y * self.scale
        elif self.kind == "input_skip":
            y = y + x.mean(1, keepdim=True).expand(-1, 4, -1, -1).contiguous()
        elif self.kind == "channel_mean":
            y = y - y.mean(1, keepdim=True)
        elif self.kind == "grouped":
            y = self.grouped(y)
        elif self.kind == "clamp":
            y = torch.clamp(y, min=self.grouped(x.repeat(1, 2, 1, 1)[:, :4]))
        elif self.kind == "index":
            y = y[:, :2].repeat(1, 2, 1, 1)
        return self.conv2(y).mean((2, 3))


@pytest.mark.parametrize("kind, op", [
    ("layernorm", "permute"), ("scale", "'scale'"), ("input_skip", "not traced"),
    ("channel_mean", "channel dimension"), ("grouped", "groups=2"), ("index", "getitem"),
    ("clamp", "also reads tensor"),
])
def test_ops_not_understood_keep_the_group_dense(kind, op):
    model = _Odd(kind)
    groups = channel_groups(model, _images(2))
    conv = next(g for g in groups if g.producers[0].param == "conv.weight")
    assert not conv.prunable and op in conv.reason, conv.reason
    assert "'" in conv.reason  # names the node


def test_shape_propagation_leaves_the_model_as_it_was():
    model = TinyResNet().train()
    state = {n: t.clone() for n, t in model.state_dict().items()}
    channel_groups(model, _images())
    assert model.training and model.block1.bn1.training
    assert all(torch.equal(state[n], t) for n, t in model.state_dict().items())
