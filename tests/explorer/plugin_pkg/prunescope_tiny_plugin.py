"""A tiny Prunescope model plug-in (tests): a seeded 64-32-10 MLP on the digits, trained by plain gradient descent."""

from __future__ import annotations

import torch
from torch import nn


def make_model(steps: int = 60, seed: int = 0) -> nn.Module:
    """The MLP after ``steps`` full-batch gradient-descent steps on the digits train split (deterministic)."""
    from prunescope.sample_models import get_sample_model

    x, y = get_sample_model("digits_mlp").data("train")
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.2 if p.dim() > 1 else 0.0))
    for _ in range(steps):
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 1.0 * p.grad
    return model.eval()


def make_explorer():
    """Tiny MLP (64-32-10) on the digits: a model plug-in returning a (model, data) pair."""
    from prunescope.sample_models import get_sample_model

    return make_model(), get_sample_model("digits_mlp").data("test")
