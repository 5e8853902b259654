"""A small timm-style registry of built-in models with their data and shipped checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Callable

import torch
from torch import nn

#: Checkpoint names every sample model ships: trained weights, theta_0 and an early theta_k.
CHECKPOINTS = ("trained", "init", "early")


@dataclass(frozen=True)
class SampleModel:
    """A built-in model: how to build it, its data splits, prunable layers and checkpoints.

    ``build()`` returns a freshly initialised module (seeded); ``load(checkpoint)`` returns the
    module with shipped weights; ``data(split)`` returns ``(inputs, labels)`` tensors.
    """

    name: str
    description: str
    build: Callable[[], nn.Module]
    load_split: Callable[[str], tuple[torch.Tensor, torch.Tensor]]
    prunable_layers: tuple[str, ...]
    train_config: dict = field(default_factory=dict)

    def data(self, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, labels)`` of ``split`` ('train' or 'test'), deterministic."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return self.load_split(split)

    def checkpoint_path(self, checkpoint: str = "trained"):
        """Path of a shipped checkpoint file (package data)."""
        if checkpoint not in CHECKPOINTS:
            raise ValueError(f"unknown checkpoint {checkpoint!r}; known: {', '.join(CHECKPOINTS)}")
        return resources.files("prunescope.sample_models") / "weights" / f"{self.name}.{checkpoint}.pt"

    def state_dict(self, checkpoint: str = "trained") -> dict[str, torch.Tensor]:
        """The shipped weights of ``checkpoint`` as a state dict."""
        path = self.checkpoint_path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing; regenerate with `python -m prunescope.sample_models.train {self.name}`"
            )
        with path.open("rb") as f:
            return torch.load(f, map_location="cpu", weights_only=True)

    def load(self, checkpoint: str = "trained") -> nn.Module:
        """The model with the shipped ``checkpoint`` weights loaded, in eval mode."""
        model = self.build()
        model.load_state_dict(self.state_dict(checkpoint))
        return model.eval()


_REGISTRY: dict[str, Callable[[], SampleModel]] = {}


def register_sample_model(fn: Callable[[], SampleModel]) -> Callable[[], SampleModel]:
    """Decorator: register a zero-argument function returning a :class:`SampleModel` under its name."""
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"sample model {name!r} is already registered")
    _REGISTRY[name] = fn
    return fn


def list_sample_models() -> list[str]:
    """Names of all registered sample models, sorted."""
    return sorted(_REGISTRY)


def get_sample_model(name: str) -> SampleModel:
    """The :class:`SampleModel` registered as ``name``; unknown names list the known ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown sample model {name!r}; known: {', '.join(list_sample_models())}")
    return _REGISTRY[name]()
