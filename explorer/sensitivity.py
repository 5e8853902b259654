"""Sensitivity analysis, measured: accuracy vs sparsity per method and per layer pruned alone."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import pandas as pd

from prunescope.explorer.core.jobs import Cancelled
from prunescope.explorer.core.setting import Setting, WeightSetting
from prunescope.explorer.pruning import get_method

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.engine import Explorer

#: Sparsities of the default sweep (fraction of weights removed).
DEFAULT_SPARSITIES = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)
#: Methods of the default global sweep (N:M is a single point, drawn as such by the views).
DEFAULT_METHODS = ("magnitude", "global_magnitude", "lamp", "erk", "uniform_plus", "random", "snip", "channel")

__all__ = ["Cancelled", "DEFAULT_METHODS", "DEFAULT_SPARSITIES", "SensitivityResult", "sensitivity_analysis"]


@dataclass(frozen=True)
class SensitivityResult:
    """``by_method``: method, sparsity (asked), weight_sparsity (achieved), accuracy, loss.
    ``by_layer``: layer, sparsity, accuracy, loss, with only that layer pruned by magnitude."""

    by_method: pd.DataFrame
    by_layer: pd.DataFrame


def sensitivity_analysis(
    explorer: "Explorer",
    methods: Sequence[str] = DEFAULT_METHODS,
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    per_layer: bool = True,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> SensitivityResult:
    """Measure accuracy and loss for every method x sparsity and every layer x sparsity.

    Cached per explorer (its model) and arguments. ``progress(done, total)`` is called after each
    evaluation; setting ``cancel`` stops the sweep with :class:`Cancelled`. The explorer's state
    is not touched.
    """
    for method in methods:
        get_method(method)
    key = (tuple(methods), tuple(float(s) for s in sparsities), per_layer)
    return explorer.cache.get_or(("sensitivity", *key), lambda: _sweep(explorer, *key, progress, cancel))


def _sweep(explorer, methods, sparsities, per_layer, progress, cancel) -> SensitivityResult:
    jobs = [("method", m, s) for m in methods for s in sparsities]
    if per_layer:
        jobs += [("layer", layer, s) for layer in explorer.layers for s in sparsities]
    rows: dict[str, list[dict]] = {"method": [], "layer": []}
    for done, (kind, what, sparsity) in enumerate(jobs, start=1):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"sensitivity analysis cancelled after {done - 1} of {len(jobs)} evaluations")
        try:
            if kind == "method":
                weights = explorer.weight_setting(what, sparsity)
            else:
                weights = WeightSetting(method="magnitude", sparsity=0.0, overrides=((what, sparsity),))
        except ValueError:  # e.g. Unif+ cannot reach this sparsity: no point, not a failed sweep
            if progress is not None:
                progress(done, len(jobs))
            continue
        metrics = explorer.evaluate(backend="torch", setting=Setting(weights=weights))
        rows[kind].append(
            {kind: what, "sparsity": sparsity, "weight_sparsity": metrics.sparsity,
             "accuracy": metrics.accuracy, "loss": metrics.loss}
        )
        if progress is not None:
            progress(done, len(jobs))
    return SensitivityResult(by_method=pd.DataFrame(rows["method"]), by_layer=pd.DataFrame(rows["layer"]))
