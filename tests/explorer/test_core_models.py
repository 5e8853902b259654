"""The engine core on models people bring, written here: an ``nn.TransformerEncoder`` classifier,
a ResNet-style net and a depthwise-separable net. Every registered method runs; masks, FLOPs,
compaction and sparse execution are checked against torch's own references."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.utils import prune as torch_prune
from torch.utils.flop_counter import FlopCounterMode

from prunescope.explorer import Explorer
from prunescope.explorer.core.compact import count_flops
from prunescope.explorer.core.setting import DENSE
from prunescope.explorer.pruning import METHODS, get_method
from prunescope.sample_models.architectures import BasicBlock as Block

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SAMPLES = 96
CLASSES = 5


# ----------------------------------------------------------------------------------- the models
class TransformerClassifier(nn.Module):
    """Linear embedding -> PyTorch's own TransformerEncoder (batch_first) -> mean over tokens -> head."""

    T, D_IN, D, HEADS, FF, LAYERS = 6, 12, 32, 4, 64, 2

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(self.D_IN, self.D)
        layer = nn.TransformerEncoderLayer(self.D, self.HEADS, dim_feedforward=self.FF, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, self.LAYERS, enable_nested_tensor=False)
        self.head = nn.Linear(self.D, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D_IN)
        return self.head(self.enc(self.embed(x)).mean(1))  # (B, CLASSES)


class ResNet(nn.Module):
    """stem -> two blocks that keep 8 channels -> a strided block to 16 (1x1 shortcut) -> one that keeps 16 -> fc."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(Block(8, 8, 1), Block(8, 8, 1))
        self.layer2 = nn.Sequential(Block(8, 16, 2), Block(16, 16, 1))
        self.fc = nn.Linear(16, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 8, 8)
        x = torch.relu(self.bn(self.stem(x)))
        return self.fc(self.layer2(self.layer1(x)).mean((2, 3)))


class DepthwiseSeparable(nn.Module):
    """MobileNet-style: stem, then (depthwise 3x3 -> BN -> pointwise 1x1 -> BN) twice, then fc."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 8, 3, 1, 1), nn.BatchNorm2d(8)
        self.dw1, self.bn1 = nn.Conv2d(8, 8, 3, 1, 1, groups=8), nn.BatchNorm2d(8)
        self.pw1, self.bn2 = nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16)
        self.dw2, self.bn3 = nn.Conv2d(16, 16, 3, 2, 1, groups=16), nn.BatchNorm2d(16)
        self.pw2, self.bn4 = nn.Conv2d(16, 24, 1), nn.BatchNorm2d(24)
        self.fc = nn.Linear(24, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 8, 8)
        x = torch.relu(self.bn0(self.stem(x)))
        x = torch.relu(self.bn2(self.pw1(torch.relu(self.bn1(self.dw1(x))))))
        x = torch.relu(self.bn4(self.pw2(torch.relu(self.bn3(self.dw2(x))))))
        return self.fc(x.mean((2, 3)))


BUILDERS = {
    "transformer": (TransformerClassifier, (TransformerClassifier.T, TransformerClassifier.D_IN)),
    "resnet": (ResNet, (3, 8, 8)),
    "depthwise": (DepthwiseSeparable, (3, 8, 8)),
}
MODELS = list(BUILDERS)


def build(name: str, seed: int = 0) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """The model (BatchNorm statistics and affines randomised so BN is not the identity) and its data:
    generated inputs, labels mostly the dense model's own predictions (a fifth of them random)."""
    cls, shape = BUILDERS[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.3, 0.3)
        model.eval()
        inputs = torch.randn(SAMPLES, *shape)
        with torch.no_grad():
            labels = model(inputs).argmax(1)
        noisy = torch.rand(SAMPLES) < 0.2
        labels[noisy] = torch.randint(0, CLASSES, (int(noisy.sum()),))
    return model, (inputs, labels)


@pytest.fixture(scope="module")
def explorers() -> dict[str, Explorer]:
    made = {}
    for name in MODELS:
        model, data = build(name)
        made[name] = Explorer(model, data, device="cpu", name=name)
    return made


def _param_owner(model: nn.Module, weight: str) -> tuple[nn.Module, str]:
    path, _, leaf = weight.rpartition(".")
    return model.get_submodule(path), leaf


def _masked_copy_logits(ex: Explorer) -> torch.Tensor:
    """Logits of a deep copy whose prunable weights were multiplied by the masks in place (no functional_call)."""
    model = copy.deepcopy(ex.model).eval()
    with torch.no_grad():
        for name, mask in ex.masks.items():
            module, leaf = _param_owner(model, name)
            getattr(module, leaf).mul_(mask)
        return model(ex.eval_data[0])


# ----------------------------------------------------------------------------------- prunable weights
def test_prunable_weights_include_the_attention_projections(explorers):
    ex = explorers["transformer"]
    for block in range(TransformerClassifier.LAYERS):
        prefix = f"enc.layers.{block}."
        assert {prefix + "self_attn.in_proj_weight", prefix + "self_attn.out_proj.weight",
                prefix + "linear1.weight", prefix + "linear2.weight"} <= set(ex.weights)
    assert ex.weights[0] == "embed.weight" and ex.weights[-1] == "head.weight"  # order of use
    assert ex.layers == ex.weights
    model = ex.model
    assert set(ex.weights) == {n for n, p in model.named_parameters() if p.dim() >= 2}


@pytest.mark.parametrize("name", MODELS)
def test_every_registered_method_runs(explorers, name, runnable_methods):
    """Each method in the registry (none skipped silently: see conftest.NEEDS_INPUT) gives masks of every weight's shape and measured
    metrics; methods whose sparsity is global achieve it up to one weight per tensor."""
    ex = explorers[name]
    params = dict(ex.model.named_parameters())
    total = sum(params[n].numel() for n in ex.weights)
    assert list(METHODS) == ex.methods
    ran = []
    for method_name in runnable_methods:
        method = get_method(method_name)
        fixed = method.fixed_sparsity(dict(method.check_options({})))
        target = 0.6 if fixed is None else fixed
        ex.prune(method_name) if fixed is not None else ex.prune(method_name, sparsity=target)
        masks = ex.masks
        assert list(masks) == ex.weights
        assert all(masks[n].dtype == torch.bool and masks[n].shape == params[n].shape for n in ex.weights)
        metrics = ex.evaluate()
        assert 0.0 <= metrics.accuracy <= 1.0 and metrics.loss == metrics.loss and metrics.samples == SAMPLES
        removed = sum(int((~masks[n]).sum()) for n in ex.weights)
        assert metrics.sparsity == pytest.approx(removed / total)
        if method.sparsity_is_global:
            assert abs(removed - target * total) <= len(ex.weights), (method_name, removed / total)
        ran.append(method_name)
    assert ran == runnable_methods


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("sparsity", [0.3, 0.8])
def test_magnitude_masks_equal_torch_l1_unstructured(explorers, name, sparsity):
    ex = explorers[name]
    masks = ex.prune("magnitude", sparsity=sparsity).masks
    model = copy.deepcopy(ex.model)
    for weight in ex.weights:
        module, leaf = _param_owner(model, weight)
        torch_prune.l1_unstructured(module, leaf, amount=sparsity)
        assert torch.equal(masks[weight], getattr(module, f"{leaf}_mask").bool()), weight


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("sparsity", [0.3, 0.8])
def test_global_magnitude_masks_equal_torch_global_unstructured(explorers, name, sparsity):
    ex = explorers[name]
    masks = ex.prune("global_magnitude", sparsity=sparsity).masks
    model = copy.deepcopy(ex.model)
    owners = [_param_owner(model, w) for w in ex.weights]
    torch_prune.global_unstructured(owners, pruning_method=torch_prune.L1Unstructured, amount=sparsity)
    for weight, (module, leaf) in zip(ex.weights, owners):
        assert torch.equal(masks[weight], getattr(module, f"{leaf}_mask").bool()), weight


# ----------------------------------------------------------------------------------- FLOPs
def _flop_counter_total(model: nn.Module, sample: torch.Tensor) -> int:
    # Grad enabled (nothing is backpropagated): in eval mode without grad,
    # nn.TransformerEncoderLayer takes its fused fast path (torch._transformer_encoder_layer_fwd),
    # whose matmuls FlopCounterMode does not see. SDPA's math kernel: FlopCounterMode has no
    # formula for the fused CPU attention kernel (aten._scaled_dot_product_flash_attention_for_cpu).
    counter = FlopCounterMode(display=False)
    was = model.training
    model.eval()
    try:
        with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH), counter:
            model(sample)
    finally:
        model.train(was)
    return counter.get_total_flops()


@pytest.mark.parametrize("name", MODELS)
def test_dense_flops_equal_flop_counter_mode(explorers, name):
    ex = explorers[name]
    sample = ex.eval_data[0][:1]
    cost = ex.cost(DENSE)
    assert cost.flops_dense == _flop_counter_total(ex.model, sample) > 0
    assert cost.flops_effective == cost.flops_dense
    if name != "transformer":  # every counted op of a CNN reads a prunable weight
        assert sum(w.flops_dense for w in ex.profile.weights) == cost.flops_dense


def test_transformer_flops_per_weight_equal_a_hand_count(explorers):
    ex = explorers["transformer"]
    c = TransformerClassifier
    t, d = c.T, c.D
    expected = {"embed.weight": 2 * t * c.D_IN * d, "head.weight": 2 * d * CLASSES}
    for b in range(c.LAYERS):
        p = f"enc.layers.{b}."
        expected |= {p + "self_attn.in_proj_weight": 2 * t * d * 3 * d, p + "self_attn.out_proj.weight": 2 * t * d * d,
                     p + "linear1.weight": 2 * t * d * c.FF, p + "linear2.weight": 2 * t * c.FF * d}
    assert {w.name: w.flops_dense for w in ex.profile.weights} == expected
    attention = c.LAYERS * 2 * (2 * t * t * d)  # q k^T and attn v, per layer: they read no prunable weight
    assert ex.profile.flops_dense == sum(expected.values()) + attention
    # pruning a weight removes its share in proportion to the weights kept
    ex.prune("magnitude", sparsity=0.75)
    cost = ex.cost()
    kept = {w.name: w.kept / w.params for w in cost.weights}
    assert cost.flops_effective == pytest.approx(attention + sum(f * kept[n] for n, f in expected.items()), abs=len(expected))


# ----------------------------------------------------------------------------------- channel pruning
def _rows_kept(mask: torch.Tensor) -> torch.Tensor:
    return mask.flatten(1).any(1)


def _cols_kept(mask: torch.Tensor) -> torch.Tensor:
    return mask.transpose(0, 1).flatten(1).any(1)


@pytest.mark.parametrize("name", ["resnet", "depthwise"])
@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_channel_masked_dense_equals_the_compacted_network(explorers, name, norm):
    ex = explorers[name].prune("channel", sparsity=0.5, norm=norm)
    masked = ex.logits()
    torch.testing.assert_close(masked, _masked_copy_logits(ex), rtol=1e-5, atol=1e-5)
    small = ex.sparse_model(backend="numba-cpu")
    assert set(ex.sparse_report().values()) == {"compacted dense"}
    with torch.no_grad():
        compact_logits = small.eval()(ex.eval_data[0])
    torch.testing.assert_close(compact_logits, masked, rtol=1e-5, atol=1e-5)
    original = sum(p.numel() for p in ex.model.parameters())
    assert sum(p.numel() for p in small.parameters()) < original
    assert ex.cost().flops_effective == count_flops(small, ex.eval_data[0][:1]) == _flop_counter_total(small, ex.eval_data[0][:1])
    assert ex.cost().flops_effective < ex.cost().flops_dense
    assert sum(p.numel() for p in ex.model.parameters()) == original  # the user's model is untouched


def test_channel_pruning_keeps_residual_channels_together(explorers):
    ex = explorers["resnet"].prune("channel", sparsity=0.5)
    m = ex.masks
    # the stem and both layer1 blocks' second convs write into one residual stream of 8 channels
    stream = [_rows_kept(m[n]) for n in ("stem.weight", "layer1.0.conv2.weight", "layer1.1.conv2.weight")]
    assert int(stream[0].sum()) == 4 and all(torch.equal(s, stream[0]) for s in stream)
    # ...which every reader of the stream loses as inputs (the next blocks' convs and the 1x1 shortcut)
    for reader in ("layer1.0.conv1.weight", "layer1.1.conv1.weight", "layer2.0.conv1.weight", "layer2.0.shortcut.0.weight"):
        assert torch.equal(_cols_kept(m[reader]), stream[0]), reader
    # the strided block's conv2, its shortcut and the next block's conv2 share the 16-channel stream
    wide = [_rows_kept(m[n]) for n in ("layer2.0.conv2.weight", "layer2.0.shortcut.0.weight", "layer2.1.conv2.weight")]
    assert int(wide[0].sum()) == 8 and all(torch.equal(s, wide[0]) for s in wide)
    assert torch.equal(_cols_kept(m["fc.weight"]), wide[0]) and _rows_kept(m["fc.weight"]).all()  # outputs stay
    # a block's inner channels are a group of their own
    inner = _rows_kept(m["layer1.0.conv1.weight"])
    assert int(inner.sum()) == 4 and torch.equal(_cols_kept(m["layer1.0.conv2.weight"]), inner)
    small = ex.sparse_model(backend="numba-cpu")
    assert (small.stem.out_channels, small.layer1[0].conv2.out_channels, small.layer2[0].shortcut[0].in_channels,
            small.layer2[0].shortcut[0].out_channels, small.fc.in_features, small.fc.out_features) == (4, 4, 4, 8, 8, CLASSES)
    assert small.bn.num_features == 4 and small.layer2[1].bn2.num_features == 8


def test_channel_pruning_ties_depthwise_inputs_and_outputs(explorers):
    ex = explorers["depthwise"].prune("channel", sparsity=0.5)
    m = ex.masks
    stem = _rows_kept(m["stem.weight"])
    assert int(stem.sum()) == 4
    assert torch.equal(_rows_kept(m["dw1.weight"]), stem)  # a depthwise conv carries its input channels
    assert torch.equal(_cols_kept(m["pw1.weight"]), stem)
    pw1 = _rows_kept(m["pw1.weight"])
    assert int(pw1.sum()) == 8 and torch.equal(_rows_kept(m["dw2.weight"]), pw1)
    assert torch.equal(_cols_kept(m["pw2.weight"]), pw1)
    small = ex.sparse_model(backend="numba-cpu")
    assert (small.dw1.groups, small.dw1.in_channels, small.dw1.out_channels) == (4, 4, 4)
    assert (small.dw2.groups, small.pw2.in_channels, small.pw2.out_channels, small.fc.in_features) == (8, 8, 12, 12)


def test_channel_pruning_of_the_transformer_keeps_what_it_cannot_couple(explorers):
    """Channels entering the encoder's residual stream or reaching the output cannot be removed:
    the method runs, keeps them, and names why."""
    ex = explorers["transformer"].prune("channel", sparsity=0.5)
    groups = ex.channel_groups()
    assert groups and not all(g.prunable for g in groups)
    for group in groups:
        for member in group.producers:
            assert bool(_rows_kept(ex.masks[member.param]).all()) != group.prunable, group.describe()
    locked = get_method("channel").locked_weights(ex._score_context(0))
    assert "head.weight" in locked and "output" in locked["head.weight"]
    torch.testing.assert_close(ex.logits(), _masked_copy_logits(ex), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------- sparse execution
FALLBACKS = {
    # MHA reads its projections functionally; TransformerEncoderLayer's fused inference path
    # reads linear1/linear2's weights without calling them: all stay in dense torch, reported.
    "transformer": ("self_attn.in_proj_weight", "self_attn.out_proj.weight", "linear1.weight", "linear2.weight"),
    "depthwise": ("dw1.weight", "dw2.weight"),
    "resnet": (),
}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method, options", [("magnitude", {"sparsity": 0.6}), ("nm", {})])
def test_numba_cpu_equals_masked_dense_with_fallbacks_reported(explorers, name, method, options):
    ex = explorers[name].prune(method, **options)
    dense = ex.logits()
    torch.testing.assert_close(dense, _masked_copy_logits(ex), rtol=1e-5, atol=1e-5)
    sparse = ex.sparse_logits(backend="numba-cpu")
    torch.testing.assert_close(sparse, dense, rtol=1e-4, atol=1e-4)
    assert ex.evaluate(backend="numba-cpu").loss == pytest.approx(ex.evaluate(backend="torch").loss, rel=1e-4)
    report = ex.sparse_report(backend="numba-cpu")
    assert list(report) == ex.weights
    masks = ex.masks
    for weight, fmt in report.items():
        if bool(masks[weight].all()):
            assert fmt == "dense", weight
        elif weight.endswith(FALLBACKS[name]):
            assert fmt.startswith("dense torch (") and fmt.endswith(")"), (weight, fmt)
        else:
            kernel = {"nm": "2:4"}.get(method, "csr")
            assert fmt in (kernel, "csr-conv") if masks[weight].dim() == 4 else fmt == kernel, (weight, fmt)
    if name == "depthwise" and method == "magnitude":
        assert "grouped conv" in report["dw1.weight"]
    if name == "transformer":  # the fused parent is named, so the report says why
        assert "TransformerEncoderLayer" in report["enc.layers.0.linear1.weight"]


# ----------------------------------------------------------------------------------- inputs
@pytest.mark.parametrize("name", MODELS)
def test_float64_inputs_are_cast_to_the_model_dtype(explorers, name):
    model, (inputs, labels) = build(name)
    ex64 = Explorer(model, (inputs.double(), labels), device="cpu")
    assert ex64.eval_data[0].dtype == torch.float32
    assert torch.equal(ex64.eval_data[0], inputs)
    ex64.prune("lamp", sparsity=0.7)
    ref = explorers[name].prune("lamp", sparsity=0.7)
    assert all(torch.equal(ex64.masks[n], ref.masks[n]) for n in ref.weights)
    torch.testing.assert_close(ex64.logits(), ref.logits(), rtol=0, atol=0)
    assert ex64.evaluate().accuracy == ref.evaluate().accuracy
    # inputs given later in float64 work too
    torch.testing.assert_close(ex64.logits(inputs=inputs[:5].double()), ref.logits()[:5], rtol=0, atol=0)


def test_inputs_that_cannot_be_cast_are_a_clear_error():
    model, (inputs, labels) = build("resnet")
    with pytest.raises(ValueError, match="complex"):
        Explorer(model, (inputs.to(torch.complex64), labels), device="cpu")
    with pytest.raises(ValueError, match="bool"):
        Explorer(model, (inputs > 0, labels), device="cpu")
