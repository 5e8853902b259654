"""The Explorer facade: FLOPs against FlopCounterMode, immutability, metrics, settings that mean
exactly what the call says, caches bounded in bytes, devices, tasks and bad input."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from prunescope.explorer import Explorer
from prunescope.explorer.core.jobs import Cancelled
from prunescope.explorer.core.setting import DENSE, Setting, WeightSetting
from prunescope.explorer.pruning import get_method
from prunescope.sample_models import get_sample_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIGITS = ["digits_mlp", "digits_cnn"]


def _prune_any(ex: Explorer, method: str, sparsity: float) -> Explorer:
    """``ex.prune(method)`` at ``sparsity``, or at the method's fixed sparsity when it has one."""
    strategy = get_method(method)
    fixed = strategy.fixed_sparsity(dict(strategy.check_options({})))
    return ex.prune(method) if fixed is not None else ex.prune(method, sparsity=sparsity)


@pytest.mark.parametrize("name", DIGITS)
def test_flops_dense_equals_flop_counter_mode(name):
    ex = Explorer.from_sample(name)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        ex.model(ex.eval_data[0][:1])
    assert ex.cost().flops_dense == counter.get_total_flops() > 0
    assert ex.cost().flops_dense == sum(w.flops_dense for w in ex.profile.weights)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)  # 5x5 -> 3x3: 9 output positions
        self.fc = nn.Linear(18, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _tiny() -> Explorer:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Explorer(Tiny(), data=(torch.randn(8, 1, 5, 5), torch.arange(8) % 3), device="cpu")


def test_flops_effective_equals_a_hand_count():
    ex = _tiny()
    assert ex.weights == ["conv.weight", "fc.weight"]
    ex.set_layer_sparsity("conv", 0.5).set_layer_sparsity("fc.weight", 0.25)  # a module name stands for its weight
    conv_kept, fc_kept = 9, 40  # round(0.5 * 18) = 9 removed; round(0.25 * 54) = 14 removed (13.5 -> 14)
    assert int(ex.masks["conv.weight"].sum()) == conv_kept and int(ex.masks["fc.weight"].sum()) == fc_kept
    cost = ex.cost()
    assert cost.flops_dense == 2 * 18 * 9 + 2 * 54
    assert cost.flops_effective == 2 * conv_kept * 9 + 2 * fc_kept
    assert cost.params_total == 18 + 2 + 54 + 3
    assert cost.params_nonzero == conv_kept + 2 + fc_kept + 3
    assert cost.per_layer.set_index("layer").loc["conv.weight", "flops_effective"] == 2 * conv_kept * 9


@pytest.mark.parametrize("name", DIGITS)
def test_accuracy_at_sparsity_zero_equals_the_dense_model(name):
    spec = get_sample_model(name)
    model = spec.load()
    inputs, labels = spec.data("test")
    with torch.no_grad():
        logits = model(inputs)
    ex = Explorer(model, data=(inputs, labels))
    m = ex.prune("lamp", sparsity=0.0).evaluate()
    assert m.accuracy == (logits.argmax(1) == labels).double().mean().item()
    assert m.loss == pytest.approx(nn.functional.cross_entropy(logits, labels).item(), rel=1e-6)
    assert m.params_nonzero == m.params_total and m.flops_effective == m.flops_dense
    assert (m.samples, m.population, m.interval, m.estimate) == (len(labels), len(labels), (m.accuracy, m.accuracy), False)


@pytest.mark.parametrize("name", DIGITS)
def test_model_is_never_mutated(name, runnable_methods):
    ex = Explorer.from_sample(name)
    before = {k: v.clone() for k, v in ex.model.state_dict().items()}
    ex.model.train()
    for method in runnable_methods:
        _prune_any(ex, method, 0.7).evaluate()
    ex.sensitivity(methods=["lamp"], sparsities=[0.5], per_layer=False)
    after = ex.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert ex.model.training and all(m.training for m in ex.model.modules())
    assert not any(hasattr(m, "weight_mask") for m in ex.model.modules())


def test_evaluate_matches_masked_weights_in_a_copy():
    ex = Explorer.from_sample("digits_cnn").prune("global_magnitude", sparsity=0.85)
    model = get_sample_model("digits_cnn").load()
    with torch.no_grad():
        for name, mask in ex.masks.items():
            model.get_parameter(name).mul_(mask)
        logits = model(ex.eval_data[0])
    m = ex.evaluate()
    assert m.accuracy == (logits.argmax(1) == ex.eval_data[1]).double().mean().item()
    assert 0.0 <= m.accuracy <= 1.0 and m.samples == len(ex.eval_data[1])


def test_set_layer_sparsity_changes_only_that_weight_under_a_layer_wise_method():
    ex = Explorer.from_sample("digits_mlp").prune("magnitude", sparsity=0.8)
    before = {n: m.clone() for n, m in ex.masks.items()}
    ex.set_layer_sparsity("fc2", 0.95)
    assert int((~ex.masks["fc2.weight"]).sum()) == round(0.95 * 30000)
    assert torch.equal(ex.masks["fc1.weight"], before["fc1.weight"]) and torch.equal(ex.masks["fc3.weight"], before["fc3.weight"])
    assert ex.setting.weights.overrides == (("fc2.weight", 0.95),) and ex.state.layer_sparsity == {"fc2.weight": 0.95}
    ex.prune("magnitude", sparsity=0.5)
    assert ex.setting.weights.overrides == ()


def test_under_a_global_method_the_target_applies_to_the_weights_not_set_by_hand():
    from torch.nn.utils import prune as torch_prune

    ex = Explorer.from_sample("digits_mlp").prune("global_magnitude", sparsity=0.8).set_layer_sparsity("fc2", 0.95)
    model = get_sample_model("digits_mlp").load()
    torch_prune.global_unstructured([(model.fc1, "weight"), (model.fc3, "weight")],
                                    pruning_method=torch_prune.L1Unstructured, amount=0.8)
    assert torch.equal(ex.masks["fc1.weight"], model.fc1.weight_mask.bool())
    assert torch.equal(ex.masks["fc3.weight"], model.fc3.weight_mask.bool())
    assert int((~ex.masks["fc2.weight"]).sum()) == round(0.95 * 30000)


# ----------------------------------------------------------------------------- settings mean what the call says
def test_options_are_not_sticky():
    """Each prune call is exactly its setting: options not given take their defaults (the issue's
    script compared methods that silently inherited the previous call's options)."""
    ex = Explorer.from_sample("digits_cnn")
    ex.prune("channel", sparsity=0.5, norm="l2")
    ex.prune("channel", sparsity=0.5)
    assert ex.setting.weights.option("norm") == "l1"
    ex.prune("nm", n=1, m=8).prune("nm")
    assert dict(ex.setting.weights.options) == {"n": 2, "m": 4} and ex.setting.weights.sparsity == 0.5
    ex.prune("random", sparsity=0.9, seed=3).prune("lamp", sparsity=0.95)
    assert ex.setting.weights.seed == 0
    fresh = Explorer.from_sample("digits_cnn").prune("lamp", sparsity=0.95)
    assert ex.setting == fresh.setting
    assert all(torch.equal(ex.masks[n], fresh.masks[n]) for n in ex.weights)
    assert ex.evaluate().accuracy == fresh.evaluate().accuracy
    # the old keep-first-and-last option is gone: refused, not silently kept
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['skip_first_last'\]"):
        ex.prune("magnitude", sparsity=0.9, skip_first_last=True)
    assert ex.setting == fresh.setting


def test_weight_setting_validates_without_changing_the_state():
    ex = Explorer.from_sample("digits_mlp").prune("lamp", sparsity=0.6)
    before = ex.setting
    ws = ex.weight_setting("nm", n=1, m=4)
    assert ws == WeightSetting(method="nm", sparsity=0.75, options=(("m", 4), ("n", 1)), seed=0)
    assert ex.setting == before
    with pytest.raises(ValueError, match="1 <= n < m"):
        ex.weight_setting("nm", n=4, m=4)
    assert ex.evaluate(setting=Setting(weights=ws)).sparsity == pytest.approx(0.75)
    assert ex.setting == before


def test_sparsity_none_keeps_the_last_free_sparsity():
    ex = Explorer.from_sample("digits_mlp").prune("lamp", sparsity=0.8)
    ex.prune("nm")  # fixed at 0.5
    ex.prune("erk")
    assert ex.setting.weights.sparsity == 0.8


@pytest.mark.parametrize("method", ["magnitude", "global_magnitude", "lamp", "erk", "uniform_plus", "random", "snip"])
@pytest.mark.parametrize("name", DIGITS)
def test_achieved_global_sparsity_is_the_target(name, method):
    ex = Explorer.from_sample(name)
    assert get_method(method).sparsity_is_global
    total = sum(w.numel for w in ex.profile.weights)
    for target in (0.5, 0.9, 0.98):
        cost = ex.prune(method, sparsity=target).cost()
        removed = total - sum(w.kept for w in cost.weights)
        assert abs(removed - target * total) <= len(ex.weights), (method, target, cost.sparsity)


def test_uniform_plus_keeps_the_first_conv_dense_and_a_fifth_of_the_last_layer():
    ex = Explorer.from_sample("digits_cnn").prune("uniform_plus", sparsity=0.9)
    per = ex.layer_sparsities()
    assert per["conv1.weight"] == 0.0  # the first layer is a convolution
    assert per["fc2.weight"] <= 0.8 + 1e-9
    middle = [per["conv2.weight"], per["fc1.weight"]]
    assert middle == pytest.approx([middle[0]] * 2, abs=1e-3)  # one uniform sparsity in between
    assert ex.cost().sparsity == pytest.approx(0.9, abs=1e-4)  # the global target, met
    mlp = Explorer.from_sample("digits_mlp").prune("uniform_plus", sparsity=0.5)  # first layer is Linear
    assert mlp.layer_sparsities()["fc1.weight"] == pytest.approx(0.5, abs=1e-3)
    # the most it can reach: everything but conv1 and a fifth of fc2 (144 and 640 of 38,160 weights)
    cnn = Explorer.from_sample("digits_cnn").prune("lamp", sparsity=0.5)
    with pytest.raises(ValueError, match="Unif\\+ cannot reach global sparsity 0.995.*at most 0.99"):
        cnn.prune("uniform_plus", sparsity=0.995)  # refused when set, not later when masks are computed
    assert cnn.setting.weights.method == "lamp"


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
        (lambda ex: ex.prune("nm", n=2, m=4, sparsity=0.7), "sparsity 0.5 with these options.*0.7"),
        (lambda ex: ex.prune("nm", n=0), "bad option for method 'nm'"),
        (lambda ex: ex.prune("lamp", sparsity=0.5, n=2), r"unknown option\(s\) \['n'\]"),
        (lambda ex: ex.prune("channel", sparsity=0.5, norm="l3"), "'l3'"),
        (lambda ex: ex.prune("random", sparsity=0.5, seed=-1), r"seed must be an integer in \[0, 2\*\*63\), got -1"),
        (lambda ex: ex.prune("random", sparsity=0.5, seed=2**64), r"seed must be an integer.*18446744073709551616"),
        (lambda ex: ex.set_layer_sparsity("fc9", 0.5), "unknown weight 'fc9'.*fc1.weight, fc2.weight, fc3.weight"),
        (lambda ex: ex.set_layer_sparsity("fc1", 1.5), "fc1.weight.*1.5"),
        (lambda ex: ex.evaluate(backend="gpu-magic"), "unknown backend"),
        (lambda ex: ex.set_setting("lamp"), "setting must be a Setting"),
    ],
)
def test_bad_input_is_a_clear_error_and_changes_nothing(call, message):
    ex = Explorer.from_sample("digits_mlp").prune("lamp", sparsity=0.6)
    before = ex.setting
    with pytest.raises(ValueError, match=message):
        call(ex)
    assert ex.setting == before


def test_nm_weight_override_must_be_dense_or_the_pattern():
    ex = Explorer.from_sample("digits_mlp").prune("nm", n=2, m=4)
    with pytest.raises(ValueError, match="takes 0 or 0.5; got 0.7"):
        ex.set_layer_sparsity("fc1", 0.7)
    assert ex.setting.weights.overrides == ()
    ex.set_layer_sparsity("fc1", 0.0)
    assert ex.masks["fc1.weight"].all()


def test_data_that_does_not_fit_the_model_is_a_clear_error():
    model = get_sample_model("digits_mlp").load()
    with pytest.raises(ValueError, match=r"shape \(10, 32\) do not fit the model"):
        Explorer(model, data=(torch.randn(10, 32), torch.zeros(10, dtype=torch.long)))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\]"):
        Explorer(model, data=(torch.randn(10, 64), torch.full((10,), 12)))
    with pytest.raises(ValueError, match="same non-zero length"):
        Explorer(model, data=(torch.randn(10, 64), torch.zeros(9, dtype=torch.long)))
    with pytest.raises(ValueError, match="1-D integer tensor of class indices"):
        Explorer(model, data=(torch.randn(10, 64), torch.rand(10)))
    with pytest.raises(ValueError, match="unknown sample model 'resnet'.*digits_cnn, digits_mlp"):
        Explorer.from_sample("resnet")
    with pytest.raises(ValueError, match="prunable weights must be parameters of the model.*fc9"):
        Explorer(model, data=get_sample_model("digits_mlp").data("test"), weights=["fc9"])


def test_sessions_do_not_share_state():
    a, b = Explorer.from_sample("digits_mlp"), Explorer.from_sample("digits_mlp")
    a.prune("lamp", sparsity=0.9).set_layer_sparsity("fc1", 0.2)
    assert b.setting == Setting() == DENSE
    assert b.evaluate().accuracy == b.dense_metrics().accuracy


def test_sensitivity_is_measured_cached_and_cancellable():
    ex = Explorer.from_sample("digits_mlp")
    calls = []
    result = ex.sensitivity(methods=["magnitude", "lamp"], sparsities=[0.0, 0.9], progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (4 + 3 * 2, 4 + 3 * 2)
    row = result.by_method.set_index(["method", "sparsity"]).loc[("lamp", 0.9)]
    assert row.accuracy == ex.evaluate(setting=Setting(WeightSetting(method="lamp", sparsity=0.9))).accuracy
    dense = ex.dense_metrics().accuracy
    assert set(result.by_layer.query("sparsity == 0.0").accuracy) == {dense}
    layer_row = result.by_layer.set_index(["layer", "sparsity"]).loc[("fc2.weight", 0.9)]
    alone = Explorer.from_sample("digits_mlp").set_layer_sparsity("fc2", 0.9).evaluate()
    assert layer_row.accuracy == alone.accuracy
    assert ex.sensitivity(methods=["magnitude", "lamp"], sparsities=[0.0, 0.9]) is result
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        ex.sensitivity(methods=["random"], sparsities=[0.5], cancel=cancel)


def test_concurrent_evaluations_from_two_threads_agree_with_serial_ones():
    ex = Explorer.from_sample("digits_mlp")
    settings = [Setting(WeightSetting(method=m, sparsity=s)) for m in ("lamp", "magnitude", "random") for s in (0.5, 0.8, 0.95)]
    serial = {s: Explorer.from_sample("digits_mlp").evaluate(setting=s).accuracy for s in settings}
    results, errors = {}, []

    def run(chunk):
        try:
            for s in chunk:
                results[s] = ex.evaluate(setting=s).accuracy
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(settings[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == serial


def test_layer_settings_are_in_set_layer_sparsity_units():
    ex = Explorer.from_sample("digits_mlp").prune("channel", sparsity=0.5)
    assert ex.layer_settings() == {"fc1.weight": 0.5, "fc2.weight": 0.5, "fc3.weight": 0.0}
    assert ex.layer_sparsities()["fc2.weight"] == pytest.approx(0.75)  # rows and dependent columns gone
    ex.set_layer_sparsity("fc1", 0.25)
    assert ex.layer_settings()["fc1.weight"] == 0.25
    ex.prune("global_magnitude", sparsity=0.8)
    assert ex.layer_settings() == ex.layer_sparsities()


def test_clear_caches_recomputes_the_same_results():
    ex = Explorer.from_sample("digits_mlp").prune("lamp", sparsity=0.9)
    first = ex.evaluate()
    ex.clear_caches()
    assert len(ex.cache) == 0
    again = ex.evaluate()
    assert again is not first and again.accuracy == first.accuracy


# ----------------------------------------------------------------------------- memory, device, task
def test_the_cache_is_bounded_in_bytes():
    ex = Explorer.from_sample("digits_mlp", cache_bytes=2 * 1024**2)
    assert ex.cache.max_bytes == 2 * 1024**2
    one_mask_set = sum(w.numel for w in ex.profile.weights)  # bool masks: a byte per weight
    for sparsity in [i / 100 for i in range(60)]:
        ex.prune("magnitude", sparsity=sparsity).evaluate()
        assert ex.cache.bytes <= ex.cache.max_bytes
    assert len(ex.cache) < 60 * 3  # old masks and metrics were evicted
    assert ex.cache.bytes > one_mask_set
    reference = Explorer.from_sample("digits_mlp").prune("magnitude", sparsity=0.1).evaluate()
    assert ex.prune("magnitude", sparsity=0.1).evaluate().accuracy == reference.accuracy  # evicted: recomputed
    with pytest.raises(ValueError, match="max_bytes must be >= 0"):
        Explorer.from_sample("digits_mlp", cache_bytes=-1)


def test_device_defaults_to_cuda_when_available_and_the_model_stays_where_it_was():
    ex = Explorer.from_sample("digits_mlp")
    assert ex.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    cpu = Explorer.from_sample("digits_mlp", device="cpu").prune("lamp", sparsity=0.8)
    assert cpu.device == torch.device("cpu") and cpu.eval_data[0].device.type == "cpu"
    assert next(cpu.model.parameters()).device.type == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_results_equal_cpu_results():  # pragma: no cover - runs where a GPU is present
    gpu = Explorer.from_sample("digits_cnn", device="cuda").prune("lamp", sparsity=0.9)
    cpu = Explorer.from_sample("digits_cnn", device="cpu").prune("lamp", sparsity=0.9)
    assert gpu.masks["conv2.weight"].device.type == "cuda"
    assert next(gpu.model.parameters()).device.type == "cpu"  # the user's module is not moved
    assert all(torch.equal(gpu.masks[n].cpu(), cpu.masks[n]) for n in cpu.weights)
    torch.testing.assert_close(gpu.logits().cpu(), cpu.logits(), rtol=1e-4, atol=1e-4)


def test_a_custom_task_is_measured_and_named():
    spec = get_sample_model("digits_mlp")
    inputs, labels = spec.data("test")

    def top3(logits, y):
        return (logits.topk(3, dim=1).indices == y[:, None]).any(1).double()

    def nll(logits, y):
        return nn.functional.nll_loss(logits.log_softmax(1), y)

    ex = Explorer(spec.load(), (inputs, labels), metric_fn=top3, loss_fn=nll).prune("magnitude", sparsity=0.9)
    m = ex.evaluate()
    model = spec.load()
    with torch.no_grad():
        for name, mask in ex.masks.items():
            model.get_parameter(name).mul_(mask)
        logits = model(inputs)
    assert m.accuracy == pytest.approx(top3(logits, labels).mean().item())
    assert m.loss == pytest.approx(nll(logits, labels).item(), rel=1e-6)
    assert (m.metric_name, m.loss_name) == ("top3", "nll")
    assert m.accuracy > Explorer(spec.load(), (inputs, labels)).prune("magnitude", sparsity=0.9).evaluate().accuracy


def test_a_regression_task_takes_float_targets():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model, x = nn.Linear(4, 1), torch.randn(32, 4)
        y = x.sum(1, keepdim=True)

    def abs_error(out, target):
        return (out - target).abs().flatten()

    ex = Explorer(model, (x, y), loss_fn=nn.functional.mse_loss, metric_fn=abs_error, device="cpu")
    m = ex.evaluate()
    with torch.no_grad():
        out = model(x)
    assert m.accuracy == pytest.approx((out - y).abs().mean().item())
    assert m.loss == pytest.approx(nn.functional.mse_loss(out, y).item())
    assert m.metric_name == "abs_error"


def test_channel_refuses_a_locked_weight_when_it_is_set():
    """fc3's outputs are the model's: refused at set_layer_sparsity (not later, inside a view's redraw)."""
    ex = Explorer.from_sample("digits_mlp").prune("channel", sparsity=0.5)
    before = ex.setting
    with pytest.raises(ValueError, match="cannot remove output channels of 'fc3.weight'"):
        ex.set_layer_sparsity("fc3", 0.2)
    assert ex.setting == before
