"""One forward for every intervention: masked weights (and token budgets) without mutating the module."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator, Sequence

import torch
from torch import nn
from torch.func import functional_call

Masks = dict[str, torch.Tensor]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the duration, restoring every submodule's own training flag after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


def masked_params(dense: dict[str, torch.Tensor], masks: Masks) -> dict[str, torch.Tensor]:
    """``{parameter name: dense * mask}`` for every masked weight (the others are left to the module)."""
    return {name: dense[name] * mask.to(dense[name].dtype) for name, mask in masks.items()}


@dataclass
class ForwardResult:
    """Logits of a forward pass and the activations captured at the requested modules."""

    logits: torch.Tensor
    features: dict[str, torch.Tensor]


def forward(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    inputs: torch.Tensor,
    *,
    intervention: Callable[[], ContextManager] | None = None,
    capture: Sequence[str] = (),
    batch_size: int = 2048,
    grad: bool = False,
) -> ForwardResult:
    """Run ``model`` on ``inputs`` with ``params`` swapped in through ``functional_call``.

    ``params`` maps parameter names (as in ``model.named_parameters()``) to the tensors to use,
    e.g. :func:`masked_params`; ``intervention`` returns a context manager entered around each
    batch (token budgets); ``capture`` names modules whose outputs are returned, flattened to
    ``(samples, features)``. The module's parameters and training flags are as before afterwards.
    The caller serialises forwards on one module (functional_call swaps its parameters in place).
    """
    modules = dict(model.named_modules())
    unknown = [c for c in capture if c not in modules]
    if unknown:
        raise ValueError(f"unknown module(s) {unknown}; known: {', '.join(n for n in modules if n)}")
    captured: dict[str, list[torch.Tensor]] = {c: [] for c in capture}

    def hook(name: str):
        def record(module, args, output):
            out = output[0] if isinstance(output, tuple) else output
            captured[name].append(out.detach().reshape(out.shape[0], -1))
        return record

    handles = [modules[c].register_forward_hook(hook(c)) for c in capture]
    outs = []
    try:
        with eval_mode(model), torch.set_grad_enabled(grad):
            for start in range(0, len(inputs), batch_size):
                batch = inputs[start : start + batch_size]
                with intervention() if intervention is not None else contextlib.nullcontext():
                    outs.append(functional_call(model, params, (batch,), strict=False))
    finally:
        for handle in handles:
            handle.remove()
    features = {c: torch.cat(v) if v else torch.empty(0) for c, v in captured.items()}
    return ForwardResult(logits=torch.cat(outs), features=features)
