"""A deterministic trainer for masked models: pruned weights stay exactly zero.

Every training runs on a deep copy of the module, on one CPU thread with deterministic
algorithms and its own generator for the batch order, so the same arguments give bit-identical
weights in any process (serial or on a Dask worker). Every global it touches is restored.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from typing import Callable, Iterator

import torch
from torch import nn

from prunescope.explorer.core.forward import forward
from prunescope.explorer.core.jobs import Cancelled

State = dict[str, torch.Tensor]
Masks = dict[str, torch.Tensor]
Data = tuple[torch.Tensor, torch.Tensor]

OPTIMIZERS = ("adam", "sgd")

__all__ = ["Cancelled", "train_masked", "evaluate_state", "reinit_state", "average_states", "loss_gradients"]


def is_cancelled(cancel: threading.Event | Callable[[], bool] | None) -> bool:
    """Whether ``cancel`` (an Event, a zero-argument callable or None) asks to stop."""
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


@contextlib.contextmanager
def deterministic_cpu(seed: int) -> Iterator[None]:
    """One thread, deterministic algorithms and a seeded global RNG; all three restored after.

    The global RNG is seeded (not just forked) so stochastic modules such as dropout draw the
    same numbers in every process.
    """
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(det, warn_only=warn_only)
            torch.set_num_threads(threads)


def clone_state(state: State) -> State:
    """Detached copies of every tensor of ``state``."""
    return {k: v.detach().clone() for k, v in state.items()}


def apply_masks(state: State, masks: Masks) -> State:
    """A copy of ``state`` with each masked tensor multiplied by its mask (pruned entries exactly 0)."""
    out = clone_state(state)
    for name, mask in masks.items():
        out[name] = out[name] * mask.to(out[name].dtype)
    return out


def check_masks(model: nn.Module, masks: Masks) -> None:
    """ValueError unless every mask names a parameter of ``model`` and has its shape and bool dtype."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params:
            raise ValueError(f"mask {name!r} is not a parameter of the model; parameters: {', '.join(params)}")
        if tuple(mask.shape) != tuple(params[name].shape) or mask.dtype != torch.bool:
            raise ValueError(
                f"mask {name!r} must be a bool tensor of shape {tuple(params[name].shape)}, "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )


def _check_hyper(epochs: int, lr: float, batch_size: int, optimizer: str) -> None:
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 0:
        raise ValueError(f"epochs must be an integer >= 0, got {epochs!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a number > 0, got {lr!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")


def train_masked(
    model: nn.Module,
    state: State,
    masks: Masks,
    train_data: Data,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 64,
    seed: int = 0,
    optimizer: str = "adam",
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | Callable[[], bool] | None = None,
) -> State:
    """Train a copy of ``model`` from ``state`` with ``masks`` held fixed; return the new state.

    Masked weights are zeroed before training, their gradients zeroed before each step and the
    weights re-masked after it, so they are exactly 0 throughout (as in Frankle & Carbin, 2019).
    The batch order comes from ``torch.Generator().manual_seed(seed)``; cross-entropy loss;
    Adam or SGD with momentum 0.9. ``progress(epoch, epochs)`` is called after each epoch and a
    set ``cancel`` raises :class:`Cancelled`. ``model`` itself is never changed.
    """
    _check_hyper(epochs, lr, batch_size, optimizer)
    check_masks(model, masks)
    x, y = train_data
    if len(x) != len(y) or len(y) == 0:
        raise ValueError(f"train_data must be (inputs, labels) of one non-zero length, got {len(x)} and {len(y)}")
    with deterministic_cpu(seed):
        net = copy.deepcopy(model)
        net.load_state_dict(apply_masks(state, masks))
        params = dict(net.named_parameters())
        held = [(params[n], m.to(params[n].dtype)) for n, m in masks.items()]
        if optimizer == "adam":
            opt = torch.optim.Adam(net.parameters(), lr=lr, foreach=False)
        else:
            opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, foreach=False)
        gen = torch.Generator().manual_seed(seed)
        net.train()
        for epoch in range(epochs):
            if is_cancelled(cancel):
                raise Cancelled(f"training cancelled after {epoch} of {epochs} epochs")
            order = torch.randperm(len(y), generator=gen)
            for start in range(0, len(y), batch_size):
                idx = order[start : start + batch_size]
                loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad(set_to_none=False)
                loss.backward()
                with torch.no_grad():
                    for p, m in held:
                        p.grad.mul_(m)
                opt.step()
                with torch.no_grad():
                    for p, m in held:
                        p.mul_(m)
            if progress is not None:
                progress(epoch + 1, epochs)
        return clone_state(net.state_dict())


def evaluate_state(model: nn.Module, state: State, data: Data, batch_size: int = 2048) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy loss)`` of ``model`` with ``state`` swapped in, on ``data``."""
    x, y = data
    logits = forward(model, state, x, batch_size=batch_size).logits
    accuracy = (logits.argmax(1) == y).double().mean().item()
    loss = nn.functional.cross_entropy(logits.double(), y).item()
    return accuracy, loss


def reinit_state(model: nn.Module, seed: int) -> State:
    """A fresh random initialisation of ``model``'s architecture, seeded (the re-init control).

    Calls every submodule's own ``reset_parameters`` on a copy under a seeded, restored global
    RNG, so it is the architecture's default init with a new draw (Frankle & Carbin's control).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = copy.deepcopy(model)
        for module in net.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
        return clone_state(net.state_dict())


def average_states(states: list[State]) -> State:
    """Element-wise mean of state dicts (weight averaging; integer buffers taken from the first)."""
    if not states:
        raise ValueError("average_states needs at least one state")
    out: State = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            out[key] = torch.stack([s[key] for s in states]).mean(0)
        else:
            out[key] = first.clone()
    return out


def loss_gradients(model: nn.Module, state: State, masks: Masks, data: Data, names: list[str]) -> State:
    """Gradients of the mean cross-entropy on ``data`` w.r.t. the parameters ``names`` (for SNIP)."""
    x, y = data
    params = {k: v.detach().clone().requires_grad_(k in names) for k, v in apply_masks(state, masks).items()}
    logits = forward(model, params, x, batch_size=max(1, len(x)), grad=True).logits
    loss = nn.functional.cross_entropy(logits, y)
    grads = torch.autograd.grad(loss, [params[n] for n in names])
    return {n: g.detach() for n, g in zip(names, grads)}
