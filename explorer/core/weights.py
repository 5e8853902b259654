"""Prunable weights of a model: which tensors, their shapes, the order they are used in and their FLOPs.

The unit of pruning is a weight tensor, named as in ``model.named_parameters()``: the ``weight``
of every Linear and ConvNd, ``in_proj_weight`` (or ``q/k/v_proj_weight``) and
``out_proj.weight`` of ``nn.MultiheadAttention`` (so ``nn.TransformerEncoder``/``Decoder`` models
work), or any parameters a user names. FLOPs per weight are what ``FlopCounterMode`` counts for
the ops that read that tensor (2 per multiply-add), so the per-weight numbers add up to the
counter's whole-model total minus the ops that use no prunable weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from prunescope.explorer.core.forward import eval_mode

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_MHA_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


@dataclass(frozen=True)
class WeightInfo:
    """One prunable weight tensor.

    ``kind`` is the owning module's type in lower case (``linear``, ``conv2d``,
    ``multiheadattention``...); ``flops_dense`` the FLOPs per input sample of the ops that read it.
    """

    name: str
    module: str
    kind: str
    shape: tuple[int, ...]
    flops_dense: int
    groups: int = 1

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def out_channels(self) -> int:
        return self.shape[0]

    @property
    def in_channels(self) -> int:
        return self.shape[1] if len(self.shape) > 1 else 1

    # The pruning criteria take these from the old LayerInfo; keep the names.
    @property
    def weight_shape(self) -> tuple[int, ...]:
        return self.shape

    @property
    def is_conv(self) -> bool:
        return self.kind.startswith("conv")


@dataclass(frozen=True)
class ModelProfile:
    """Prunable weights in the order the forward pass first uses them, and the dense FLOPs per sample."""

    weights: tuple[WeightInfo, ...]
    flops_dense: int

    def __getitem__(self, name: str) -> WeightInfo:
        for w in self.weights:
            if w.name == name:
                return w
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(w.name for w in self.weights)

    # Criteria written against the old profile iterate ``profile.layers``.
    @property
    def layers(self) -> tuple[WeightInfo, ...]:
        return self.weights


def default_prunable_weights(model: nn.Module) -> list[str]:
    """Parameter names of every Linear/ConvNd ``weight`` and every MultiheadAttention projection."""
    names = []
    for mod_name, module in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        if isinstance(module, (nn.Linear, *_CONV)) and getattr(module, "weight", None) is not None:
            names.append(prefix + "weight")
        elif isinstance(module, nn.MultiheadAttention):
            names += [prefix + p for p in _MHA_WEIGHTS if getattr(module, p, None) is not None]
    return names


def resolve_weight_names(model: nn.Module, names: Sequence[str] | None) -> list[str]:
    """Validated parameter names; a module name (``fc1``) stands for its ``weight``."""
    params = dict(model.named_parameters())
    if names is None:
        chosen = default_prunable_weights(model)
    else:
        chosen = []
        for n in names:
            if n not in params and f"{n}.weight" in params:
                n = f"{n}.weight"
            chosen.append(n)
    unknown = [n for n in chosen if n not in params]
    if unknown or not chosen:
        raise ValueError(
            f"prunable weights must be parameters of the model; got {unknown or 'none'}; "
            f"parameters: {', '.join(params)}"
        )
    bad = [n for n in chosen if params[n].dim() < 2]
    if bad:
        raise ValueError(f"prunable weights must have at least 2 dimensions (out, in, ...); got {bad}")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"prunable weights are named twice: {chosen}")
    return chosen


class _AttributingCounter(FlopCounterMode):
    """FlopCounterMode that also credits each op's FLOPs to the prunable weights among its arguments."""

    def __init__(self, storages: dict[int, str]) -> None:
        super().__init__(display=False)
        self.storages = storages
        self.per_weight: dict[str, int] = {n: 0 for n in storages.values()}
        self.order: list[str] = []

    def _count_flops(self, func_packet, out, args, kwargs):  # noqa: ANN001 - torch's private hook
        if func_packet in self.flop_registry:
            used = []
            for a in list(args) + list(kwargs.values()):
                if isinstance(a, torch.Tensor):
                    name = self.storages.get(a.untyped_storage().data_ptr())
                    if name is not None and name not in used:
                        used.append(name)
            if used:
                flops = self.flop_registry[func_packet](*args, **kwargs, out_val=out)
                for name in used:  # an op reading two prunable weights credits both
                    self.per_weight[name] += int(flops)
                    if name not in self.order:
                        self.order.append(name)
        return super()._count_flops(func_packet, out, args, kwargs)


def profile_model(model: nn.Module, sample: torch.Tensor, names: Sequence[str]) -> ModelProfile:
    """Run ``model`` once on ``sample`` (a batch of one) to find each weight's use order and FLOPs.

    Runs with autograd enabled (no backward) so that fused inference fast paths, which
    FlopCounterMode cannot see into (``nn.TransformerEncoderLayer``'s), are not taken, and with
    SDPA's math kernel, whose matmuls it counts (it has no formula for the fused CPU kernel, so
    attention would otherwise count as zero FLOPs).
    """
    params = dict(model.named_parameters())
    storages = {params[n].untyped_storage().data_ptr(): n for n in names}
    if len(storages) != len(names):
        raise ValueError("two prunable weights share storage (tied weights); name only one of them")
    counter = _AttributingCounter(storages)
    with eval_mode(model), torch.enable_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        model(sample)
    unused = [n for n in names if n not in counter.order]
    if unused:
        raise ValueError(f"prunable weights {unused} are never used in the model's forward pass")
    modules = dict(model.named_modules())
    infos = []
    for n in counter.order:
        mod_name = n.rpartition(".")[0]
        module = modules.get(mod_name)
        infos.append(WeightInfo(
            name=n, module=mod_name, kind=type(module).__name__.lower() if module is not None else "parameter",
            shape=tuple(params[n].shape), flops_dense=counter.per_weight[n] // max(len(sample), 1),
            groups=int(getattr(module, "groups", 1)),
        ))
    return ModelProfile(weights=tuple(infos), flops_dense=int(counter.get_total_flops()) // max(len(sample), 1))


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's parameters (float32 if it has none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def cast_inputs(inputs: Any, dtype: torch.dtype, what: str = "inputs") -> torch.Tensor:
    """``inputs`` as a tensor of the model's floating ``dtype``; a clear ValueError if it cannot be."""
    try:
        tensor = torch.as_tensor(inputs)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{what} must be a tensor or array of numbers, got {type(inputs).__name__}: {err}") from None
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"{what} must be real numbers castable to the model's {dtype}, got {tensor.dtype}")
    return tensor.to(dtype)
