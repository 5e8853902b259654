"""Run a pruned model through the sparse kernels, and measure what the sparsity really buys.

:func:`build_sparse_model` returns a *copy* of the user's model whose prunable layers are
replaced by kernel-backed modules (the user's module is untouched). Each layer gets the format
that fits its mask: an N:M packed matmul for N:M Linear layers, smaller dense layers for
channel-pruned chains (the compaction itself), CSR SpMM / sparse convolution otherwise, and the
original dense layer where nothing was pruned. :func:`benchmark` times the dense model and the
sparse execution side by side, per layer and whole model, against the FLOPs reduction.
"""

from __future__ import annotations

import copy
import statistics
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import pandas as pd
import torch
from torch import nn

from prunescope.explorer.pruning import nm_groups
from prunescope.explorer.sensitivity import Cancelled
from prunescope.explorer.state import PruneSpec

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.engine import Explorer

KERNEL_BACKENDS = ("numba-cpu", "numba-cuda")


class KernelLayer(nn.Module):
    """An ``nn.Module`` around a prepared kernel layer (``SparseLinear``, ``NMLinear``, ``SparseConv2d``)."""

    def __init__(self, prepared: Any, backend: str, fmt: str) -> None:
        super().__init__()
        self.prepared, self.backend, self.format = prepared, backend, fmt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prepared(x, backend=self.backend)

    def extra_repr(self) -> str:
        return f"format={self.format}, backend={self.backend}"


def check_backend(backend: str) -> str:
    """``backend`` if it is a kernel backend available here, else a ValueError naming what is."""
    from prunescope.kernels import available_backends

    if backend not in KERNEL_BACKENDS:
        raise ValueError(f"sparse execution runs on {KERNEL_BACKENDS}, got backend={backend!r}")
    if backend not in available_backends():
        raise ValueError(f"backend {backend!r} is not available on this machine; available: {available_backends()}")
    return backend


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _kernel_layer(module: nn.Module, mask: torch.Tensor, spec: PruneSpec, backend: str) -> nn.Module:
    """The kernel-backed replacement of one pruned layer."""
    from prunescope.kernels import NMLinear, SparseConv2d, SparseLinear

    weight, bias = module.weight.detach(), None if module.bias is None else module.bias.detach()
    if isinstance(module, nn.Linear):
        if spec.method == "nm" and nm_groups(mask, spec.m) is not None:
            return KernelLayer(NMLinear.from_dense(weight, mask, spec.n, spec.m, bias), backend, f"{spec.n}:{spec.m}")
        return KernelLayer(SparseLinear.from_dense(weight, mask, bias), backend, "csr")
    if isinstance(module, nn.Conv2d):
        prepared = SparseConv2d.from_dense(
            weight, mask, bias, stride=module.stride, padding=module.padding,
            dilation=module.dilation, groups=module.groups,
        )
        return KernelLayer(prepared, "numba-cpu", "csr-conv")  # the conv kernel is CPU only
    raise ValueError(f"no sparse kernel for {type(module).__name__}; sparse execution supports Linear and Conv2d")


def _compacted(module: nn.Module, kept_out: torch.Tensor, kept_in: torch.Tensor) -> nn.Module:
    """``module`` rebuilt as a smaller dense layer with outputs ``kept_out`` and inputs ``kept_in``."""
    from prunescope.kernels import compact_conv2d, compact_linear

    out_idx, in_idx = kept_out.nonzero().flatten(), kept_in.nonzero().flatten()
    bias = None if module.bias is None else module.bias.detach()
    if isinstance(module, nn.Linear):
        weight, bias = compact_linear(module.weight.detach(), bias, out_idx, in_idx)
        small = nn.Linear(len(in_idx), len(out_idx), bias=bias is not None)
    elif isinstance(module, nn.Conv2d) and module.groups == 1:
        weight, bias = compact_conv2d(module.weight.detach(), bias, out_idx, in_idx)
        small = nn.Conv2d(len(in_idx), len(out_idx), module.kernel_size, module.stride,
                          module.padding, module.dilation, bias=bias is not None)
    else:
        raise ValueError(f"channel compaction supports Linear and Conv2d (groups=1), not {module}")
    with torch.no_grad():
        small.weight.copy_(weight)
        if bias is not None:
            small.bias.copy_(bias)
    return small


def dense_copy(explorer: "Explorer") -> nn.Module:
    """A copy of the explorer's model with its snapshot of the dense weights, in eval mode."""
    model = copy.deepcopy(explorer.model).eval()
    for name, weight in explorer.dense_weights.items():
        model.get_submodule(name).weight.data = weight.clone()
    return model


def build_sparse_model(explorer: "Explorer", spec: PruneSpec, backend: str = "numba-cpu") -> tuple[nn.Module, dict[str, str]]:
    """A copy of the explorer's model running ``spec``'s pruned layers on the kernels (eval mode),
    and the format each prunable layer runs in."""
    check_backend(backend)
    masks = explorer.masks_for(spec)
    model = dense_copy(explorer)
    formats = {name: "dense" for name in explorer.layers}
    if spec.method == "channel":
        layers = explorer.layers
        for i, name in enumerate(layers):
            mask = masks[name].flatten(2) if masks[name].dim() > 2 else masks[name]
            kept_out = mask.any(1) if mask.dim() == 2 else mask.any(2).any(1)
            if i == len(layers) - 1:
                kept_out = torch.ones_like(kept_out)
            kept_in = mask.any(0) if mask.dim() == 2 else mask.any(2).any(0)
            _replace(model, name, _compacted(model.get_submodule(name), kept_out, kept_in))
            formats[name] = "compacted dense"
        _check_compaction(explorer, spec, model)
        return model, formats
    for name in explorer.layers:
        if not bool(masks[name].all()):
            layer = _kernel_layer(model.get_submodule(name), masks[name], spec, backend)
            _replace(model, name, layer)
            formats[name] = layer.format
    return model, formats


def _check_compaction(explorer: "Explorer", spec: PruneSpec, model: nn.Module) -> None:
    """Compaction assumes a plain chain of layers; make sure the small model computes the same."""
    inputs = explorer.eval_data[0][:32]
    with torch.no_grad():
        try:
            small = model(inputs)
        except RuntimeError as err:
            raise ValueError(f"channel compaction needs a plain chain of layers; the model does not run compacted: {err}") from None
    reference = explorer.logits(explorer.masks_for(spec), inputs)
    if not torch.allclose(small, reference, rtol=1e-4, atol=1e-4):
        raise ValueError("channel compaction needs a plain chain of layers; this model's compacted form computes something else")


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclass(frozen=True)
class SpeedReport:
    """Measured vs theoretical speed-up of sparse execution, per layer and for the whole model.

    ``table`` columns: layer, format, dense_ms, sparse_ms, measured_speedup, flops_dense,
    flops_effective, theoretical_speedup; the last row (layer ``"model"``) is the whole forward.
    """

    table: pd.DataFrame
    batch_size: int
    backend: str
    spec: PruneSpec

    @property
    def whole(self) -> pd.Series:
        return self.table.iloc[-1]


def _layer_inputs(model: nn.Module, layers: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input each of ``layers`` receives when ``model`` runs on ``x``."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        model.get_submodule(name).register_forward_pre_hook(lambda mod, args, name=name: seen.setdefault(name, args[0]))
        for name in layers
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def benchmark(explorer: "Explorer", spec: PruneSpec, backend: str = "numba-cpu",
              batch_size: int = 64, repeats: int = 20,
              progress: Callable[[int, int], None] | None = None,
              cancel: threading.Event | None = None) -> SpeedReport:
    """Time dense torch vs sparse execution of ``spec`` per layer and whole model at ``batch_size``.

    Inputs are the explorer's evaluation data (repeated to fill the batch). Medians over
    ``repeats`` runs after two warm-up runs; the theoretical speed-up is the FLOPs reduction.
    ``progress(done, total)`` is called after each timed item; setting ``cancel`` stops with
    :class:`~prunescope.explorer.sensitivity.Cancelled`.
    """
    if not isinstance(batch_size, int) or not 1 <= batch_size <= 4096:
        raise ValueError(f"batch_size must be an integer in [1, 4096], got {batch_size!r}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    sparse_model, formats = build_sparse_model(explorer, spec, backend)
    dense_model = dense_copy(explorer)
    data = explorer.eval_data[0]
    x = data.repeat((batch_size + len(data) - 1) // len(data), *[1] * (data.dim() - 1))[:batch_size].contiguous()
    dense_inputs = _layer_inputs(dense_model, explorer.layers, x)
    sparse_inputs = _layer_inputs(sparse_model, explorer.layers, x)
    per_layer = explorer.cost(spec).per_layer.set_index("layer")
    rows = []
    total = len(explorer.layers) + 1

    def step() -> None:
        if progress is not None:
            progress(len(rows), total)
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"speed measurement cancelled after {len(rows)} of {total} items")

    with torch.no_grad():
        for name in explorer.layers:
            step()
            dense_layer, sparse_layer = dense_model.get_submodule(name), sparse_model.get_submodule(name)
            dense_s = median_seconds(lambda: dense_layer(dense_inputs[name]), repeats)
            sparse_s = median_seconds(lambda: sparse_layer(sparse_inputs[name]), repeats)
            rows.append(_row(name, formats[name], dense_s, sparse_s, per_layer.loc[name, "flops_dense"],
                             per_layer.loc[name, "flops_effective"]))
        step()
        dense_s = median_seconds(lambda: dense_model(x), repeats)
        sparse_s = median_seconds(lambda: sparse_model(x), repeats)
    cost = explorer.cost(spec)
    rows.append(_row("model", "whole forward", dense_s, sparse_s, cost.flops_dense, cost.flops_effective))
    if progress is not None:
        progress(total, total)
    return SpeedReport(table=pd.DataFrame(rows), batch_size=batch_size, backend=backend, spec=spec)


def _row(layer: str, fmt: str, dense_s: float, sparse_s: float, flops_dense: int, flops_effective: int) -> dict:
    return {
        "layer": layer, "format": fmt, "dense_ms": dense_s * 1e3, "sparse_ms": sparse_s * 1e3,
        "measured_speedup": dense_s / sparse_s, "flops_dense": int(flops_dense),
        "flops_effective": int(flops_effective), "theoretical_speedup": flops_dense / max(flops_effective, 1),
    }
