"""The masked trainer against a plain torch training loop; masks, globals and determinism."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
from torch import nn

from prunescope.explorer.core.jobs import Cancelled
from prunescope.explorer.lottery.trainer import average_states, evaluate_state, reinit_state, train_masked


def _reference_training(model, state, data, epochs, lr, batch_size, seed):
    """The textbook loop (Adam, cross-entropy, randperm batch order) written independently."""
    net = copy.deepcopy(model)
    net.load_state_dict(state)
    opt = torch.optim.Adam(net.parameters(), lr=lr, foreach=False)
    gen = torch.Generator().manual_seed(seed)
    x, y = data
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(epochs):
            order = torch.randperm(len(y), generator=gen)
            for s in range(0, len(y), batch_size):
                i = order[s : s + batch_size]
                loss = nn.functional.cross_entropy(net(x[i]), y[i])
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return net.state_dict()


def _random_masks(state, names, density, seed):
    # offset: a generator seeded like the sample models' init (0) would replay theta_0's draws
    gen = torch.Generator().manual_seed(10_000 + seed)
    return {n: torch.rand(state[n].shape, generator=gen) < density for n in names}


def test_dense_training_equals_reference_loop(mlp_inputs):
    m, s0, data = mlp_inputs["model"], mlp_inputs["theta0_state"], mlp_inputs["train_data"]
    ones = {n: torch.ones(s0[n].shape, dtype=torch.bool) for n in mlp_inputs["prunable"]}
    got = train_masked(m, s0, ones, data, epochs=2, lr=1e-3, batch_size=64, seed=7)
    ref = _reference_training(m, s0, data, 2, 1e-3, 64, 7)
    for k in ref:
        assert torch.equal(got[k], ref[k]), k
    assert not torch.equal(got["fc1.weight"], s0["fc1.weight"])


def test_pruned_weights_stay_zero_and_model_untouched(mlp_inputs):
    m, s0, data = mlp_inputs["model"], mlp_inputs["theta0_state"], mlp_inputs["train_data"]
    before = {k: v.clone() for k, v in m.state_dict().items()}
    masks = _random_masks(s0, mlp_inputs["prunable"], 0.3, 0)
    for opt in ("adam", "sgd"):
        got = train_masked(m, s0, masks, data, epochs=2, lr=1e-2, seed=1, optimizer=opt)
        for n, mask in masks.items():
            assert (got[n][~mask] == 0).all(), (opt, n)
            assert (got[n][mask] != s0[n][mask]).float().mean() > 0.5  # kept weights did train
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k])


def test_globals_restored_and_seed_determines_result(mlp_inputs):
    m, s0, data = mlp_inputs["model"], mlp_inputs["theta0_state"], mlp_inputs["train_data"]
    masks = _random_masks(s0, mlp_inputs["prunable"], 0.5, 1)
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    a = train_masked(m, s0, masks, data, epochs=1, lr=1e-3, seed=3)
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.get_num_threads() == threads and torch.are_deterministic_algorithms_enabled() == det
    b = train_masked(m, s0, masks, data, epochs=1, lr=1e-3, seed=3)
    c = train_masked(m, s0, masks, data, epochs=1, lr=1e-3, seed=4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc1.weight"], c["fc1.weight"])


def test_evaluate_matches_module_and_reinit_is_fresh(mlp_inputs):
    m, s0 = mlp_inputs["model"], mlp_inputs["theta0_state"]
    x, y = mlp_inputs["eval_data"]
    net = copy.deepcopy(m)
    net.load_state_dict(s0)
    with torch.no_grad():
        logits = net(x)
    acc, loss = evaluate_state(m, s0, (x, y))
    assert acc == pytest.approx((logits.argmax(1) == y).double().mean().item())
    assert loss == pytest.approx(nn.functional.cross_entropy(logits.double(), y).item(), rel=1e-6)
    r1, r2, r1b = reinit_state(m, 1), reinit_state(m, 2), reinit_state(m, 1)
    assert torch.equal(r1["fc1.weight"], r1b["fc1.weight"]) and not torch.equal(r1["fc1.weight"], r2["fc1.weight"])
    assert not torch.equal(r1["fc1.weight"], s0["fc1.weight"])
    # same distribution as the module's own init: Kaiming-uniform bound 1/sqrt(fan_in)
    assert r1["fc1.weight"].abs().max().item() <= 1 / 64 ** 0.5
    assert r1["fc1.weight"].std().item() == pytest.approx(s0["fc1.weight"].std().item(), rel=0.05)
    avg = average_states([r1, r2])
    assert torch.allclose(avg["fc2.bias"], (r1["fc2.bias"] + r2["fc2.bias"]) / 2)


def test_trainer_bad_inputs_and_cancel(mlp_inputs):
    m, s0, data = mlp_inputs["model"], mlp_inputs["theta0_state"], mlp_inputs["train_data"]
    with pytest.raises(ValueError, match="not a parameter"):
        train_masked(m, s0, {"fc9.weight": torch.ones(2, dtype=torch.bool)}, data, epochs=1, lr=1e-3)
    with pytest.raises(ValueError, match="bool tensor of shape"):
        train_masked(m, s0, {"fc1.weight": torch.ones(3, 3, dtype=torch.bool)}, data, epochs=1, lr=1e-3)
    for bad in ({"epochs": -1}, {"lr": 0.0}, {"batch_size": 0}, {"optimizer": "lion"}):
        kw = {"epochs": 1, "lr": 1e-3, **bad}
        with pytest.raises(ValueError, match=next(iter(bad))):
            train_masked(m, s0, {}, data, **kw)
    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled):
        train_masked(m, s0, {}, data, epochs=1, lr=1e-3, cancel=ev)
