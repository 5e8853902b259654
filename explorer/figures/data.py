"""Data functions of the built-in figures: explorer + options -> a tidy table (one row per plotted
value, columns named with their units). The app's Bokeh views and the paper renderer draw these.

Every access to the explorer sits in one of the small ``_engine_*`` functions at the top, so a
change of the engine's API is adapted in one place.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import pandas as pd

from prunescope.explorer.figures import draw
from prunescope.explorer.figures.registry import Option, register_figure
from prunescope.explorer.figures.style import METHOD_LABELS

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from prunescope.explorer.engine import Explorer

Progress = Callable[[int, int], None]
#: Methods and sparsities of the default sweep figures.
SWEEP_METHODS = ("magnitude", "global_magnitude", "lamp", "erk", "random", "snip")
SWEEP_SPARSITIES = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)
WHOLE_MODEL = "whole model"


# ------------------------------------------------------------------------------ engine access
def _engine_by_method(ex: "Explorer", methods: tuple[str, ...], sparsities: tuple[float, ...],
                      progress: Progress | None) -> pd.DataFrame:
    """``by_method``: method, sparsity, weight_sparsity, accuracy, loss (fractions)."""
    return ex.sensitivity(methods=list(methods), sparsities=list(sparsities), per_layer=False,
                          progress=progress).by_method


def _engine_by_layer(ex: "Explorer", sparsities: tuple[float, ...], progress: Progress | None) -> pd.DataFrame:
    """``by_layer``: layer, sparsity, weight_sparsity, accuracy, loss (each layer pruned alone)."""
    return ex.sensitivity(methods=[], sparsities=list(sparsities), per_layer=True, progress=progress).by_layer


def _engine_per_layer(ex: "Explorer") -> pd.DataFrame:
    """``cost().per_layer``: layer, kind, shape, params, kept, sparsity, flops_dense, flops_effective."""
    return ex.cost().per_layer


def _engine_masks(ex: "Explorer") -> dict[str, "torch.Tensor"]:
    """The current setting's masks, True = kept."""
    return ex.masks


def _engine_speed(ex: "Explorer", batch_size: int, backend: str, repeats: int,
                  progress: Progress | None) -> pd.DataFrame:
    """``benchmark().table``: layer, format, dense_ms, sparse_ms, measured_speedup, flops_dense,
    flops_effective, theoretical_speedup; the last row (layer 'model') is the whole forward."""
    return ex.benchmark(batch_size=batch_size, backend=backend, repeats=repeats, progress=progress).table


@contextlib.contextmanager
def cpu_threads(threads: int) -> Iterator[None]:
    """torch's and Numba's CPU thread counts set to ``threads`` for the duration (0: unchanged)."""
    if threads == 0:
        yield
        return
    import numba
    import torch

    before = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        numba.set_num_threads(before[1])


def _engine_setting(ex: "Explorer") -> str:
    """The current pruning setting in words (for captions)."""
    weights = getattr(getattr(ex, "setting", None), "weights", None) or getattr(ex, "state", None)
    if weights is None:
        return ""
    return f"{getattr(ex, 'name', 'model')}, {weights.method} at sparsity {weights.sparsity:g}"


def method_label(method: str) -> str:
    """The legend name of a pruning criterion: its short name, else its display name, else its name."""
    from prunescope.explorer.pruning import get_method

    if method in METHOD_LABELS:
        return METHOD_LABELS[method]
    try:
        return str(getattr(get_method(method), "display_name", method))
    except ValueError:
        return method


def _attrs(frame: pd.DataFrame, ex: "Explorer", **extra: Any) -> pd.DataFrame:
    frame.attrs.update({"model": getattr(ex, "name", ""), "setting": _engine_setting(ex), **extra})
    return frame


# ------------------------------------------------------------------------------ sensitivity
_SPARSITIES = Option("sparsities", "floats", SWEEP_SPARSITIES, "Sparsities of the sweep (fractions in [0, 1))",
                     bounds=(0.0, 0.999))


@register_figure(
    "sensitivity", "Measured top-1 accuracy vs weight sparsity, one curve per pruning method",
    draw=draw.draw_sensitivity, long=True, shows_setting=False, height={"single": 2.6, "double": 2.6},
    options=(
        Option("methods", "strs", SWEEP_METHODS, "Pruning methods swept (registered criteria)"),
        _SPARSITIES,
    ),
)
def sensitivity_data(ex: "Explorer", *, methods: tuple[str, ...], sparsities: tuple[float, ...],
                     progress: Progress | None = None) -> pd.DataFrame:
    """One row per (method, sparsity): method, method_label, target_sparsity_pct,
    weight_sparsity_pct (achieved), accuracy_pct, loss_nats (mean cross-entropy)."""
    table = _engine_by_method(ex, methods, sparsities, progress)
    frame = pd.DataFrame({
        "method": table["method"].astype(str),
        "method_label": [method_label(m) for m in table["method"]],
        "target_sparsity_pct": 100 * table["sparsity"].astype(float),
        "weight_sparsity_pct": 100 * table["weight_sparsity"].astype(float),
        "accuracy_pct": 100 * table["accuracy"].astype(float),
        "loss_nats": table["loss"].astype(float),
    })
    return _attrs(frame, ex)


@register_figure(
    "layer_sensitivity", "Measured top-1 accuracy when one layer alone is pruned by magnitude, one curve per layer",
    draw=draw.draw_layer_sensitivity, long=True, shows_setting=False, options=(_SPARSITIES,),
    height=draw.layer_sensitivity_height,
)
def layer_sensitivity_data(ex: "Explorer", *, sparsities: tuple[float, ...],
                           progress: Progress | None = None) -> pd.DataFrame:
    """One row per (layer, sparsity): layer, layer_sparsity_pct, model_weight_sparsity_pct,
    accuracy_pct, loss_nats."""
    table = _engine_by_layer(ex, sparsities, progress)
    frame = pd.DataFrame({
        "layer": table["layer"].astype(str),
        "layer_sparsity_pct": 100 * table["sparsity"].astype(float),
        "model_weight_sparsity_pct": 100 * table["weight_sparsity"].astype(float),
        "accuracy_pct": 100 * table["accuracy"].astype(float),
        "loss_nats": table["loss"].astype(float),
    })
    return _attrs(frame, ex)


# ------------------------------------------------------------------------------ one setting
@register_figure(
    "allocation", "Per-layer sparsity (or kept weights) of the current pruning setting",
    draw=draw.draw_allocation, height=draw.allocation_height,
    options=(Option("quantity", "str", "sparsity", "Bar height: 'sparsity' (% removed) or 'kept' (weights kept vs dense)",
                    choices=("sparsity", "kept")),),
)
def allocation_data(ex: "Explorer", *, quantity: str) -> pd.DataFrame:
    """One row per prunable layer: layer, kind, shape, params (dense count), kept_weights,
    sparsity_pct, flops_dense, flops_effective (per input sample)."""
    table = _engine_per_layer(ex)
    frame = pd.DataFrame({
        "layer": table["layer"].astype(str),
        "kind": table["kind"].astype(str),
        "shape": table["shape"].astype(str),
        "params": table["params"].astype("int64"),
        "kept_weights": table["kept"].astype("int64"),
        "sparsity_pct": 100 * table["sparsity"].astype(float),
        "flops_dense": table["flops_dense"].astype("int64"),
        "flops_effective": table["flops_effective"].astype("int64"),
    })
    return _attrs(frame, ex, quantity=quantity)


def mask_matrix(mask: "torch.Tensor") -> "torch.Tensor":
    """A weight mask as a 2-D matrix: conv (out, in, kh, kw) becomes (out, in*kh*kw)."""
    return mask.reshape(mask.shape[0], -1) if mask.dim() > 1 else mask.reshape(1, -1)


@register_figure(
    "mask", "The mask of one prunable weight (kept / pruned), rows = output channels",
    draw=draw.draw_mask, height={"single": 2.6, "double": 3.2},
    options=(Option("layer", "str", None, "Weight shown (default: the first prunable one)"),),
)
def mask_data(ex: "Explorer", *, layer: str | None) -> pd.DataFrame:
    """One row per weight: layer, row (output index), column (input index; conv: in*kh*kw), kept (0/1)."""
    masks = _engine_masks(ex)
    name = layer if layer is not None else next(iter(masks))
    if name not in masks and f"{name}.weight" in masks:  # a module name stands for its weight
        name = f"{name}.weight"
    if name not in masks:
        raise ValueError(f"unknown layer {name!r} for figure 'mask'; prunable: {', '.join(masks)}")
    mask = masks[name]
    matrix = mask_matrix(mask).to("cpu")
    rows, cols = matrix.shape
    frame = pd.DataFrame({
        "layer": name,
        "row": np.repeat(np.arange(rows), cols),
        "column": np.tile(np.arange(cols), rows),
        "kept": matrix.reshape(-1).numpy().astype("int8"),
    })
    return _attrs(frame, ex, layer=name, weight_shape=tuple(mask.shape), rows=rows, columns=cols)


@register_figure(
    "speed", "Measured latency of dense torch vs the sparse kernels per layer and for the whole model",
    draw=draw.draw_speed, long=True, height=draw.speed_height,
    options=(
        Option("quantity", "str", "latency", "'latency' (dense vs sparse, ms) or 'speedup' (measured vs FLOPs reduction)",
               choices=("latency", "speedup")),
        Option("batch_size", "int", 64, "Inputs per timed forward", bounds=(1, 4096)),
        Option("repeats", "int", 20, "Timed runs per item (the median is shown)", bounds=(1, 10000)),
        Option("backend", "str", "numba-cpu", "Sparse kernel backend", choices=("numba-cpu", "numba-cuda")),
        Option("threads", "int", 0, "CPU threads of torch and Numba while timing (0: as configured; "
               "1 gives fair numbers on a busy machine)", bounds=(0, 1024)),
    ),
)
def speed_data(ex: "Explorer", *, quantity: str, batch_size: int, repeats: int, backend: str, threads: int,
               progress: Progress | None = None) -> pd.DataFrame:
    """One row per bar. ``quantity='latency'``: layer, format, execution ('dense torch' / 'sparse
    kernels'), latency_ms. ``'speedup'``: layer, format, estimate ('measured' / 'theoretical'),
    speedup_x (dense time over sparse time; theoretical = FLOPs reduction). The whole forward pass
    is the last layer, named 'whole model'."""
    with cpu_threads(threads):
        table = _engine_speed(ex, batch_size, backend, repeats, progress)
    layers = [WHOLE_MODEL if name == "model" else str(name) for name in table["layer"]]
    if quantity == "latency":
        pairs = (("dense torch", "dense_ms"), ("sparse kernels", "sparse_ms"))
        column, key = "latency_ms", "execution"
    else:
        pairs = (("measured", "measured_speedup"), ("theoretical", "theoretical_speedup"))
        column, key = "speedup_x", "estimate"
    rows = [{"layer": name, "format": str(fmt), key: label, column: float(value)}
            for name, fmt, values in zip(layers, table["format"], table.itertuples(index=False))
            for label, source in pairs for value in [getattr(values, source)]]
    return _attrs(pd.DataFrame(rows), ex, quantity=quantity, batch_size=batch_size, backend=backend,
                  repeats=repeats, threads=threads)
