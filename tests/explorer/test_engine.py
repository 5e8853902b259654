"""The Explorer facade: FLOPs against FlopCounterMode, immutability, metrics and bad input."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from prunescope.explorer import Explorer
from prunescope.explorer.sensitivity import Cancelled
from prunescope.explorer.state import PruneSpec
from prunescope.sample_models import get_sample_model


def test_flops_dense_equals_flop_counter_mode(sample_name):
    ex = Explorer.from_sample(sample_name)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        ex.model(ex.eval_data[0][:1])
    assert ex.cost().flops_dense == counter.get_total_flops() > 0
    assert ex.cost().flops_dense == sum(layer.flops_dense for layer in ex.profile.layers)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)  # 5x5 -> 3x3: 9 output positions
        self.fc = nn.Linear(18, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_flops_effective_equals_a_hand_count():
    torch.manual_seed(0)
    data = (torch.randn(8, 1, 5, 5), torch.arange(8) % 3)
    ex = Explorer(Tiny(), data=data)
    ex.set_layer_sparsity("conv", 0.5).set_layer_sparsity("fc", 0.25)
    conv_kept, fc_kept = 9, 40  # round(0.5 * 18) = 9 removed; round(0.25 * 54) = 14 removed (banker's rounding: 13.5 -> 14)
    assert int(ex.masks["conv"].sum()) == conv_kept and int(ex.masks["fc"].sum()) == fc_kept
    cost = ex.cost()
    assert cost.flops_dense == 2 * 18 * 9 + 2 * 54
    assert cost.flops_effective == 2 * conv_kept * 9 + 2 * fc_kept
    assert cost.params_total == 18 + 2 + 54 + 3
    assert cost.params_nonzero == conv_kept + 2 + fc_kept + 3
    assert cost.per_layer.set_index("layer").loc["conv", "flops_effective"] == 2 * conv_kept * 9


def test_accuracy_at_sparsity_zero_equals_the_dense_model(sample_name):
    spec = get_sample_model(sample_name)
    model = spec.load()
    inputs, labels = spec.data("test")
    with torch.no_grad():
        logits = model(inputs)
    ex = Explorer(model, data=(inputs, labels))
    m = ex.prune("lamp", sparsity=0.0).evaluate()
    assert m.accuracy == (logits.argmax(1) == labels).double().mean().item()
    assert m.loss == pytest.approx(nn.functional.cross_entropy(logits, labels).item(), rel=1e-6)
    assert m.params_nonzero == m.params_total and m.flops_effective == m.flops_dense


def test_model_is_never_mutated(sample_name):
    ex = Explorer.from_sample(sample_name)
    before = {k: v.clone() for k, v in ex.model.state_dict().items()}
    ex.model.train()
    for method in ex.methods:
        ex.prune(method, **({} if method == "nm" else {"sparsity": 0.7}))
        ex.evaluate()
    ex.sensitivity(methods=["lamp"], sparsities=[0.5], per_layer=False)
    after = ex.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert ex.model.training and all(m.training for m in ex.model.modules())
    assert not any(hasattr(m, "weight_mask") for m in ex.model.modules())


def test_evaluate_matches_masked_weights_in_a_copy():
    ex = Explorer.from_sample("digits_cnn").prune("global_magnitude", sparsity=0.85)
    spec = get_sample_model("digits_cnn")
    model = spec.load()
    with torch.no_grad():
        for name, mask in ex.masks.items():
            model.get_submodule(name).weight.mul_(mask)
        logits = model(ex.eval_data[0])
    m = ex.evaluate()
    assert m.accuracy == (logits.argmax(1) == ex.eval_data[1]).double().mean().item()
    assert 0.0 <= m.accuracy <= 1.0 and m.samples == len(ex.eval_data[1])


def test_set_layer_sparsity_changes_only_that_layer():
    ex = Explorer.from_sample("digits_mlp").prune("global_magnitude", sparsity=0.8)
    before = {n: m.clone() for n, m in ex.masks.items()}
    ex.set_layer_sparsity("fc2", 0.95)
    assert int((~ex.masks["fc2"]).sum()) == round(0.95 * 30000)
    assert torch.equal(ex.masks["fc1"], before["fc1"]) and torch.equal(ex.masks["fc3"], before["fc3"])
    assert ex.state.layer_sparsity == {"fc2": 0.95}
    ex.prune("global_magnitude", sparsity=0.5)
    assert ex.state.layer_sparsity == {}


def test_skip_first_last_keeps_them_dense():
    ex = Explorer.from_sample("digits_cnn").prune("lamp", sparsity=0.8, skip_first_last=True)
    assert ex.masks["conv1"].all() and ex.masks["fc2"].all()
    sparsities = ex.layer_sparsities()
    kept = sum(int(ex.masks[n].sum()) for n in ("conv2", "fc1"))
    assert (1 - kept / (4608 + 32768)) == pytest.approx(0.8, abs=1e-4)
    assert sparsities["conv2"] > 0


def test_dataloader_data_equals_tensor_data():
    spec = get_sample_model("digits_mlp")
    inputs, labels = spec.data("test")
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=100)
    a = Explorer(spec.load(), data=loader).prune("magnitude", sparsity=0.5).evaluate()
    b = Explorer(spec.load(), data=(inputs, labels)).prune("magnitude", sparsity=0.5).evaluate()
    assert a.accuracy == b.accuracy and torch.equal(Explorer(spec.load(), data=loader).eval_data[0], inputs)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda ex: ex.prune("magnitude", sparsity=1.0), r"\[0, 1\).*1\.0"),
        (lambda ex: ex.prune("magnitude", sparsity=-0.1), r"\[0, 1\).*-0\.1"),
        (lambda ex: ex.prune("magnitude", sparsity="lots"), "'lots'"),
        (lambda ex: ex.prune("magic", sparsity=0.5), "unknown pruning method 'magic'.*lamp"),
        (lambda ex: ex.prune("nm", n=4, m=4), "1 <= n < m.*n=4, m=4"),
        (lambda ex: ex.prune("nm", n=2, m=4, sparsity=0.7), "1 - n/m = 0.5"),
        (lambda ex: ex.prune("lamp", sparsity=0.5, n=2), r"unknown option\(s\) \['n'\]"),
        (lambda ex: ex.prune("channel", sparsity=0.5, norm="l3"), "'l3'"),
        (lambda ex: ex.set_layer_sparsity("fc9", 0.5), "unknown layer 'fc9'.*fc1, fc2, fc3"),
        (lambda ex: ex.set_layer_sparsity("fc1", 1.5), "fc1.*1.5"),
        (lambda ex: ex.evaluate(backend="gpu-magic"), "unknown backend"),
    ],
)
def test_bad_input_is_a_clear_error_and_changes_nothing(call, message):
    ex = Explorer.from_sample("digits_mlp").prune("lamp", sparsity=0.6)
    before = ex.state.spec()
    with pytest.raises(ValueError, match=message):
        call(ex)
    assert ex.state.spec() == before


def test_nm_layer_override_must_be_dense_or_the_pattern():
    ex = Explorer.from_sample("digits_mlp").prune("nm", n=2, m=4)
    with pytest.raises(ValueError, match="0 \\(dense\\) or 1 - n/m"):
        ex.set_layer_sparsity("fc1", 0.7)
    assert ex.state.layer_sparsity == {}
    ex.set_layer_sparsity("fc1", 0.0)
    assert ex.masks["fc1"].all()


def test_data_that_does_not_fit_the_model_is_a_clear_error():
    model = get_sample_model("digits_mlp").load()
    with pytest.raises(ValueError, match=r"shape \(10, 32\) do not fit the model"):
        Explorer(model, data=(torch.randn(10, 32), torch.zeros(10, dtype=torch.long)))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\]"):
        Explorer(model, data=(torch.randn(10, 64), torch.full((10,), 12)))
    with pytest.raises(ValueError, match="same non-zero length"):
        Explorer(model, data=(torch.randn(10, 64), torch.zeros(9, dtype=torch.long)))
    with pytest.raises(ValueError, match="unknown sample model 'resnet'.*digits_cnn, digits_mlp"):
        Explorer.from_sample("resnet")


def test_sessions_do_not_share_state():
    a, b = Explorer.from_sample("digits_mlp"), Explorer.from_sample("digits_mlp")
    a.prune("lamp", sparsity=0.9).set_layer_sparsity("fc1", 0.2)
    assert b.state.spec() == PruneSpec(method="magnitude", sparsity=0.0)
    assert b.evaluate().accuracy == b.dense_metrics().accuracy


def test_sensitivity_is_measured_cached_and_cancellable():
    ex = Explorer.from_sample("digits_mlp")
    calls = []
    result = ex.sensitivity(methods=["magnitude", "lamp"], sparsities=[0.0, 0.9], progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (4 + 3 * 2, 4 + 3 * 2)
    row = result.by_method.set_index(["method", "sparsity"]).loc[("lamp", 0.9)]
    assert row.accuracy == ex.evaluate(spec=PruneSpec(method="lamp", sparsity=0.9)).accuracy
    dense = ex.dense_metrics().accuracy
    assert set(result.by_layer.query("sparsity == 0.0").accuracy) == {dense}
    layer_row = result.by_layer.set_index(["layer", "sparsity"]).loc[("fc2", 0.9)]
    alone = Explorer.from_sample("digits_mlp").set_layer_sparsity("fc2", 0.9).evaluate()
    assert layer_row.accuracy == alone.accuracy
    assert ex.sensitivity(methods=["magnitude", "lamp"], sparsities=[0.0, 0.9]) is result
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        ex.sensitivity(methods=["random"], sparsities=[0.5], cancel=cancel)


def test_concurrent_evaluations_from_two_threads_agree_with_serial_ones():
    ex = Explorer.from_sample("digits_mlp")
    specs = [PruneSpec(method=m, sparsity=s) for m in ("lamp", "magnitude", "random") for s in (0.5, 0.8, 0.95)]
    serial = {spec: Explorer.from_sample("digits_mlp").evaluate(spec=spec).accuracy for spec in specs}
    results, errors = {}, []

    def run(chunk):
        try:
            for spec in chunk:
                results[spec] = ex.evaluate(spec=spec).accuracy
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(specs[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == serial


def test_layer_settings_are_in_set_layer_sparsity_units():
    ex = Explorer.from_sample("digits_mlp").prune("channel", sparsity=0.5)
    assert ex.layer_settings() == {"fc1": 0.5, "fc2": 0.5, "fc3": 0.0}
    assert ex.layer_sparsities()["fc2"] == pytest.approx(0.75)  # rows and dependent columns gone
    ex.set_layer_sparsity("fc1", 0.25)
    assert ex.layer_settings()["fc1"] == 0.25
    ex.prune("global_magnitude", sparsity=0.8)
    assert ex.layer_settings() == ex.layer_sparsities()


def test_clear_caches_recomputes_the_same_results():
    ex = Explorer.from_sample("digits_mlp").prune("lamp", sparsity=0.9)
    first = ex.evaluate()
    ex.clear_caches()
    again = ex.evaluate()
    assert again is not first and again.accuracy == first.accuracy
    with pytest.raises(ValueError, match="skip_first_last must be True or False, got 'yes'"):
        ex.prune("lamp", sparsity=0.5, skip_first_last="yes")
