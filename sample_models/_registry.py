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
    """A built-in model: how to build it, its data splits, prunable weights and checkpoints.

    ``build()`` returns a freshly initialised module (seeded, the global RNG untouched);
    ``load(checkpoint)`` returns the module with shipped weights; ``data(split)`` returns
    ``(inputs, labels)`` tensors. ``prunable_weights`` names parameters as in
    ``model.named_parameters()`` (e.g. ``"fc1.weight"``); ``image_shape`` is the (channels,
    height, width) an input sample is shown as (flat inputs are reshaped to it), or None.
    """

    name: str
    description: str
    build: Callable[[], nn.Module]
    load_split: Callable[[str], tuple[torch.Tensor, torch.Tensor]]
    prunable_weights: tuple[str, ...]
    train_config: dict = field(default_factory=dict)
    image_shape: tuple[int, ...] | None = None
    class_names: tuple[str, ...] = ()

    @property
    def prunable_layers(self) -> tuple[str, ...]:
        """Module names owning the prunable weights (deprecated: use ``prunable_weights``)."""
        return tuple(name.rsplit(".", 1)[0] for name in self.prunable_weights)

    def data(self, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, labels)`` of ``split`` ('train' or 'test'), deterministic."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return self.load_split(split)

    def train_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, labels)`` of the training split (calibration data, retraining)."""
        return self.data("train")

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
