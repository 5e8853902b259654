"""Sparse execution through the kernels: same predictions as masked dense, right formats, speed report."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from prunescope.explorer import Explorer
from prunescope.explorer.core.jobs import Cancelled
from prunescope.explorer.core.setting import Setting, WeightSetting
from prunescope.explorer.sparse_exec import KernelLayer, build_sparse_model
from prunescope.kernels import available_backends

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _setting(method: str, sparsity: float, **options) -> Setting:
    return Setting(weights=WeightSetting(method=method, sparsity=sparsity, options=tuple(sorted(options.items()))))

SETTINGS = [
    ("magnitude", {"sparsity": 0.5}),
    ("global_magnitude", {"sparsity": 0.9}),
    ("lamp", {"sparsity": 0.95}),
    ("erk", {"sparsity": 0.8}),
    ("nm", {"n": 2, "m": 4}),
    ("nm", {"n": 1, "m": 4}),
    ("channel", {"sparsity": 0.5}),
    ("uniform_plus", {"sparsity": 0.9}),
    ("snip", {"sparsity": 0.8, "seed": 1}),
]


@pytest.fixture(scope="module")
def explorers() -> dict[str, Explorer]:
    return {name: Explorer.from_sample(name) for name in ("digits_mlp", "digits_cnn")}


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("method, options", SETTINGS)
@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_sparse_execution_matches_masked_dense(explorers, name, method, options):
    ex = explorers[name].prune(method, **options)
    dense = ex.logits()
    sparse = ex.sparse_logits(backend="numba-cpu")
    assert _relative_error(sparse, dense) <= 1e-4
    assert torch.equal(sparse.argmax(1), dense.argmax(1))
    fast, ref = ex.evaluate(backend="numba-cpu"), ex.evaluate(backend="torch")
    assert fast.accuracy == ref.accuracy and fast.loss == pytest.approx(ref.loss, rel=1e-4)


def test_each_layer_gets_the_format_its_mask_fits(explorers):
    ex = explorers["digits_cnn"]
    _, formats = build_sparse_model(ex, ex.weight_setting("nm"))
    # conv1: 9 inputs, not N:M (dense); conv2: N:M pattern, run by the CSR conv kernel
    assert formats == {"conv1.weight": "dense", "conv2.weight": "csr-conv", "fc1.weight": "2:4", "fc2.weight": "2:4"}
    _, formats = build_sparse_model(ex, ex.weight_setting("lamp", 0.9))
    assert formats == {"conv1.weight": "csr-conv", "conv2.weight": "csr-conv", "fc1.weight": "csr", "fc2.weight": "csr"}
    assert ex.sparse_report(Setting(weights=ex.weight_setting("lamp", 0.9))) == formats


def test_channel_pruning_runs_as_smaller_dense_layers(explorers):
    ex = explorers["digits_cnn"]
    model, formats = build_sparse_model(ex, ex.weight_setting("channel", 0.5))
    assert set(formats.values()) == {"compacted dense"}
    assert [model.conv1.out_channels, model.conv2.in_channels, model.conv2.out_channels] == [8, 8, 16]
    assert [model.fc1.in_features, model.fc1.out_features, model.fc2.in_features, model.fc2.out_features] == [256, 32, 32, 10]
    assert not any(isinstance(m, KernelLayer) for m in model.modules())


def test_the_users_model_is_untouched_by_sparse_execution(explorers):
    ex = explorers["digits_mlp"]
    before = {k: v.clone() for k, v in ex.model.state_dict().items()}
    ex.prune("lamp", sparsity=0.9).evaluate(backend="numba-cpu")
    ex.prune("channel", sparsity=0.3).benchmark(batch_size=8, repeats=1)
    assert all(isinstance(m, torch.nn.Linear) for n, m in ex.model.named_children())
    assert all(torch.equal(before[k], v) for k, v in ex.model.state_dict().items())


def test_benchmark_reports_per_layer_and_whole_model(explorers):
    ex = explorers["digits_mlp"].prune("global_magnitude", sparsity=0.9)
    report = ex.benchmark(batch_size=32, repeats=3)
    table = report.table
    assert list(table["layer"]) == ["fc1.weight", "fc2.weight", "fc3.weight", "model"]
    assert list(table["format"]) == ["csr", "csr", "csr", "whole forward"]
    cost = ex.cost()
    whole = report.whole
    assert whole.flops_dense == cost.flops_dense and whole.flops_effective == cost.flops_effective
    assert whole.theoretical_speedup == pytest.approx(cost.flops_dense / cost.flops_effective)
    assert (table["dense_ms"] > 0).all() and (table["sparse_ms"] > 0).all()
    assert table["measured_speedup"].to_numpy() == pytest.approx((table["dense_ms"] / table["sparse_ms"]).to_numpy())


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, r"batch_size must be an integer in \[1, 4096\], got 0"),
    ({"repeats": 0}, "repeats must be a positive integer"),
    ({"backend": "torch"}, "sparse execution runs on"),
])
def test_benchmark_bad_input(explorers, kwargs, message):
    with pytest.raises(ValueError, match=message):
        explorers["digits_mlp"].benchmark(**kwargs)


@pytest.mark.skipif("numba-cuda" in available_backends(), reason="a GPU is present")
def test_cuda_backend_without_a_gpu_is_a_clear_error(explorers):
    with pytest.raises(ValueError, match="'numba-cuda' is not available on this machine"):
        explorers["digits_mlp"].prune("lamp", sparsity=0.5).evaluate(backend="numba-cuda")


def test_two_sessions_run_the_kernels_at_once():
    """Two explorers (two app sessions) evaluating through the parallel kernels from two threads."""
    settings = [("lamp", 0.9), ("global_magnitude", 0.8), ("erk", 0.95), ("magnitude", 0.7)]
    sessions = [Explorer.from_sample("digits_mlp"), Explorer.from_sample("digits_cnn")]
    expected = {(i, s): sessions[i].evaluate(backend="torch", setting=_setting(m, s)).accuracy
                for i in range(2) for m, s in settings}
    results, errors = {}, []

    def run(i: int) -> None:
        try:
            for _ in range(3):
                for m, s in settings:
                    ex = sessions[i]
                    ex.clear_caches(scores=False)
                    ex.sparse_model(_setting(m, s))  # built concurrently too
                    results[(i, s)] = ex.evaluate(backend="numba-cpu", setting=_setting(m, s)).accuracy
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and results == expected


def test_benchmark_reports_progress_and_can_be_cancelled(explorers):
    ex = explorers["digits_mlp"].prune("lamp", sparsity=0.9)
    calls = []
    ex.benchmark(batch_size=4, repeats=1, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled, match="after 0 of 4"):
        ex.benchmark(batch_size=4, repeats=1, cancel=cancel)


class GroupedNet(nn.Module):
    """A grouped conv between two plain ones: the grouped one has no kernel and runs in dense torch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.conv2 = nn.Conv2d(8, 4, 1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.grouped(torch.relu(self.conv1(x))))))
        return self.fc(x.flatten(1))


def test_a_weight_without_a_kernel_runs_in_dense_torch_and_says_so(explorers):
    """One grouped conv does not stop the whole model from running on the kernels (it did)."""
    inputs, labels = explorers["digits_cnn"].eval_data
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GroupedNet()
    ex = Explorer(model, (inputs[:64], labels[:64]), device="cpu").prune("magnitude", sparsity=0.7)
    report = ex.sparse_report()
    assert report == {"conv1.weight": "csr-conv", "grouped.weight": "dense torch (no kernel for grouped conv, groups=2)",
                      "conv2.weight": "csr-conv", "fc.weight": "csr"}
    sparse_model = ex.sparse_model()
    assert isinstance(sparse_model.conv1, KernelLayer) and isinstance(sparse_model.grouped, nn.Conv2d)
    assert _relative_error(ex.sparse_logits(), ex.logits()) <= 1e-4
    table = ex.benchmark(batch_size=8, repeats=1).table.set_index("layer")
    assert table.loc["grouped.weight", "format"] == report["grouped.weight"]
    assert table.loc["grouped.weight", "sparse_ms"] != table.loc["grouped.weight", "sparse_ms"]  # NaN: not timed alone
    assert table.loc["conv1.weight", "sparse_ms"] > 0


def test_benchmark_progress_counts_only_the_timed_items(explorers):
    """Weights that are not timed alone (dense, no kernel) do not count as progress: the counter
    goes 0..total once, and a cancel before the first item says 'after 0 of total'."""
    ex = explorers["digits_cnn"].prune("nm")  # conv1 stays dense (9 inputs): three timed weights + the model
    calls = []
    ex.benchmark(batch_size=2, repeats=1, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled, match="after 0 of 4 items"):
        ex.benchmark(batch_size=2, repeats=1, cancel=cancel)
