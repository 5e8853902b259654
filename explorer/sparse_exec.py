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

from prunescope.explorer.core.jobs import Cancelled
from prunescope.explorer.core.setting import Setting, WeightSetting
from prunescope.explorer.pruning import get_method, nm_groups

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.engine import Explorer

KERNEL_BACKENDS = ("numba-cpu", "numba-cuda")


class KernelLayer(nn.Module):
    """An ``nn.Module`` around a prepared kernel layer (``SparseLinear``, ``NMLinear``, ``SparseConv2d``).

    ``weight`` and ``bias`` stay readable (the masked dense tensors), so a parent that reads them
    directly instead of calling the layer still computes the pruned model.
    """

    def __init__(self, prepared: Any, backend: str, fmt: str, weight: torch.Tensor | None = None,
                 bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.prepared, self.backend, self.format = prepared, backend, fmt
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("bias", bias, persistent=False)

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


def _kernel_layer(module: nn.Module, mask: torch.Tensor, fmt: dict, backend: str) -> nn.Module | None:
    """The kernel-backed replacement of one pruned module, or None when no kernel fits it."""
    from prunescope.kernels import NMLinear, SparseConv2d, SparseLinear

    weight, bias = module.weight.detach(), None if module.bias is None else module.bias.detach()
    masked = weight * mask.to(weight.dtype)
    if type(module) is nn.Linear:
        if fmt["format"] == "nm" and nm_groups(mask, fmt["m"]) is not None:
            prepared = NMLinear.from_dense(weight, mask, fmt["n"], fmt["m"], bias)
            return KernelLayer(prepared, backend, f"{fmt['n']}:{fmt['m']}", masked, bias)
        return KernelLayer(SparseLinear.from_dense(weight, mask, bias), backend, "csr", masked, bias)
    if type(module) is nn.Conv2d and module.groups == 1 and module.padding_mode == "zeros":
        prepared = SparseConv2d.from_dense(
            weight, mask, bias, stride=module.stride, padding=module.padding,
            dilation=module.dilation, groups=module.groups,
        )
        return KernelLayer(prepared, "numba-cpu", "csr-conv", masked, bias)  # the conv kernel is CPU only
    return None


#: Modules with fused inference paths that read their children's weights directly.
_FUSING_PARENTS = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


def _fused_by(model: nn.Module, module_name: str) -> str | None:
    """The type of the ancestor that may read ``module_name``'s weight without calling it, if any."""
    parts = module_name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        ancestor = model.get_submodule(".".join(parts[:i]))
        if isinstance(ancestor, _FUSING_PARENTS):
            return type(ancestor).__name__
    return None


def _fallback_reason(module: nn.Module | None, called: bool, fused_by: str | None = None) -> str:
    if module is None:
        return "dense torch (a bare parameter)"
    if fused_by is not None:
        return f"dense torch (its {fused_by} parent has a fused path that reads the weight)"
    kind = type(module).__name__
    if not called:
        return f"dense torch (read by its parent, not called: {kind})"
    if isinstance(module, nn.Conv2d) and module.groups != 1:
        return f"dense torch (no kernel for grouped conv, groups={module.groups})"
    return f"dense torch (no kernel for {kind})"


def dense_copy(explorer: "Explorer") -> nn.Module:
    """A copy of the explorer's model with its snapshot of the dense weights, in eval mode."""
    model = copy.deepcopy(explorer._run_model).eval()
    params = dict(model.named_parameters())
    for name, weight in explorer.dense_weights.items():
        params[name].data = weight.clone()
    return model


def _module_inputs(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, tuple]:
    """The positional arguments each module of ``names`` receives when ``model`` runs on ``x``
    (modules whose own forward never runs, e.g. read by their parent, are absent)."""
    seen: dict[str, tuple] = {}
    hooks = [
        model.get_submodule(name).register_forward_pre_hook(lambda mod, args, name=name: seen.setdefault(name, args))
        for name in names
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def build_sparse_model(explorer: "Explorer", setting: WeightSetting, backend: str = "numba-cpu") -> tuple[nn.Module, dict[str, str]]:
    """A copy of the explorer's model running ``setting``'s pruned weights on the kernels (eval
    mode), and the format each prunable weight runs in. A weight with no kernel (grouped conv,
    attention projections, bare parameters) runs in dense torch and its format says why."""
    check_backend(backend)
    masks = explorer.masks_for(setting)
    model = dense_copy(explorer)
    fmt = get_method(setting.method).execution_format(dict(setting.options))
    if fmt["format"] == "compacted":
        from prunescope.explorer.core.compact import compact_model

        groups = explorer.channel_groups()
        keep = {g.index: masks[g.producers[0][0]].flatten(1).any(1) for g in groups
                if g.prunable and g.producers[0][0] in masks}
        small = compact_model(model, groups, keep)
        return small, {name: "compacted dense" for name in explorer.weights}
    called = set(_module_inputs(model, [n for n, _ in model.named_modules()], explorer.eval_data[0][:1]))
    modules = dict(model.named_modules())
    formats = {}
    for name in explorer.weights:
        module_name, _, leaf = name.rpartition(".")
        module = modules.get(module_name)
        if bool(masks[name].all()):
            formats[name] = "dense"
            continue
        layer = None
        fused_by = _fused_by(model, module_name) if module is not None else None
        if module is not None and leaf == "weight" and module_name in called and fused_by is None:
            layer = _kernel_layer(module, masks[name], fmt, backend)
        if layer is None:  # run masked in dense torch
            params = dict(model.named_parameters())
            params[name].data = params[name].data * masks[name].to(params[name].dtype)
            formats[name] = _fallback_reason(module, module_name in called, fused_by)
        else:
            _replace(model, module_name, layer)
            formats[name] = layer.format
    return model, formats


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
    setting: WeightSetting

    @property
    def whole(self) -> pd.Series:
        return self.table.iloc[-1]


def benchmark(explorer: "Explorer", setting: WeightSetting, backend: str = "numba-cpu",
              batch_size: int = 64, repeats: int = 20,
              progress: Callable[[int, int], None] | None = None,
              cancel: threading.Event | None = None) -> SpeedReport:
    """Time dense torch vs sparse execution of ``setting`` per weight and whole model at ``batch_size``.

    Inputs are the explorer's evaluation data (repeated to fill the batch). Medians over
    ``repeats`` runs after two warm-up runs; the theoretical speed-up is the FLOPs reduction.
    Weights that run on a kernel are timed as their module alone; the others (dense torch,
    compacted) only within the whole forward (NaN per weight). ``progress(done, total)`` is called
    after each timed item; setting ``cancel`` stops with :class:`~prunescope.explorer.core.jobs.Cancelled`.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 4096:
        raise ValueError(f"batch_size must be an integer in [1, 4096], got {batch_size!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    sparse_model, formats = build_sparse_model(explorer, setting, backend)
    dense_model = dense_copy(explorer)
    data = explorer.eval_data[0]
    x = data.repeat((batch_size + len(data) - 1) // len(data), *[1] * (data.dim() - 1))[:batch_size].contiguous()
    timed = {n: n.rpartition(".")[0] for n in explorer.weights
             if isinstance(_get(sparse_model, n.rpartition(".")[0]), KernelLayer)}
    dense_inputs = _module_inputs(dense_model, list(timed.values()), x)
    sparse_inputs = _module_inputs(sparse_model, list(timed.values()), x)
    cost = explorer.cost(Setting(weights=setting))
    per_weight = {w.name: w for w in cost.weights}
    rows = []
    total = len(timed) + 1
    done = 0

    def step() -> None:
        if progress is not None:
            progress(done, total)
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"speed measurement cancelled after {done} of {total} items")

    with torch.no_grad():
        for name in explorer.weights:
            w = per_weight[name]
            if name not in timed:
                rows.append(_row(name, formats[name], float("nan"), float("nan"), w.flops_dense, w.flops_effective))
                continue
            step()
            module = timed[name]
            dense_layer, sparse_layer = dense_model.get_submodule(module), sparse_model.get_submodule(module)
            dense_s = median_seconds(lambda: dense_layer(*dense_inputs[module]), repeats)
            sparse_s = median_seconds(lambda: sparse_layer(*sparse_inputs[module]), repeats)
            rows.append(_row(name, formats[name], dense_s, sparse_s, w.flops_dense, w.flops_effective))
            done += 1
        step()
        dense_s = median_seconds(lambda: dense_model(x), repeats)
        sparse_s = median_seconds(lambda: sparse_model(x), repeats)
    rows.append(_row("model", "whole forward", dense_s, sparse_s, cost.flops_dense, cost.flops_effective))
    if progress is not None:
        progress(total, total)
    return SpeedReport(table=pd.DataFrame(rows), batch_size=batch_size, backend=backend, setting=setting)


def _get(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _row(layer: str, fmt: str, dense_s: float, sparse_s: float, flops_dense: int, flops_effective: int) -> dict:
    return {
        "layer": layer, "format": fmt, "dense_ms": dense_s * 1e3, "sparse_ms": sparse_s * 1e3,
        "measured_speedup": dense_s / sparse_s if sparse_s == sparse_s else float("nan"),
        "flops_dense": int(flops_dense), "flops_effective": int(flops_effective),
        "theoretical_speedup": flops_dense / max(flops_effective, 1),
    }
