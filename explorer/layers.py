"""What the engine needs to know about a model's prunable layers: shapes, order and FLOPs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

#: Module types whose ``weight`` the engine prunes by default.
PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class LayerInfo:
    """One prunable layer: its module name, kind, weight shape and output positions per sample.

    ``positions`` is how many times each weight is used per input sample: output pixels of a
    convolution, tokens of a Linear applied to a sequence, 1 for a plain Linear.
    """

    name: str
    kind: str
    weight_shape: tuple[int, ...]
    positions: int

    @property
    def numel(self) -> int:
        """Number of weights."""
        n = 1
        for d in self.weight_shape:
            n *= d
        return n

    @property
    def out_channels(self) -> int:
        return self.weight_shape[0]

    @property
    def in_channels(self) -> int:
        return self.weight_shape[1]

    @property
    def flops_dense(self) -> int:
        """FLOPs per sample, 2 per multiply-add, as FlopCounterMode counts them (bias excluded)."""
        return 2 * self.numel * self.positions


@dataclass(frozen=True)
class ModelProfile:
    """Prunable layers (in execution order) and the dense FLOPs of one forward pass per sample."""

    layers: tuple[LayerInfo, ...]
    flops_dense: int

    def __getitem__(self, name: str) -> LayerInfo:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)


def default_prunable_layers(model: nn.Module) -> list[str]:
    """Names (as in ``model.named_modules()``) of all Linear and Conv layers with a weight."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE_TYPES) and getattr(module, "weight", None) is not None
    ]


def profile_model(model: nn.Module, sample: torch.Tensor, layer_names: list[str]) -> ModelProfile:
    """Run ``model`` once on ``sample`` (batch of 1) to record layer order, positions and FLOPs.

    The model is run under ``torch.no_grad`` and FlopCounterMode; nothing in it is changed.
    """
    modules = dict(model.named_modules())
    order: list[str] = []
    positions: dict[str, int] = {}

    def hook(name: str):
        def record(module: nn.Module, args, output: torch.Tensor) -> None:
            if name not in positions:
                order.append(name)
                positions[name] = 0
            positions[name] += output.numel() // module.weight.shape[0]

        return record

    handles = [modules[name].register_forward_hook(hook(name)) for name in layer_names]
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(sample)
    finally:
        for handle in handles:
            handle.remove()
    unused = [name for name in layer_names if name not in positions]
    if unused:
        raise ValueError(f"prunable layers {unused} are never called in the model's forward pass")
    layers = tuple(
        LayerInfo(
            name=name,
            kind=type(modules[name]).__name__.lower(),
            weight_shape=tuple(modules[name].weight.shape),
            positions=positions[name],
        )
        for name in order
    )
    return ModelProfile(layers=layers, flops_dense=int(counter.get_total_flops()))
