"""What a setting costs and how well it does: per-weight sparsity, parameters, FLOPs; measured metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch

from prunescope.explorer.core.weights import ModelProfile


@dataclass(frozen=True)
class WeightCost:
    """One prunable weight's share of a setting's cost (FLOPs per input sample)."""

    name: str
    kind: str
    shape: tuple[int, ...]
    params: int
    kept: int
    flops_dense: int
    flops_effective: int

    @property
    def sparsity(self) -> float:
        return 1.0 - self.kept / self.params


@dataclass(frozen=True)
class Cost:
    """What a setting costs, known without running the model (shown while a slider moves).

    ``params_*`` count all model parameters (only prunable weights are ever pruned); ``flops_*``
    are per input sample, 2 per multiply-add, as ``torch.utils.flop_counter`` counts them;
    ``flops_effective`` keeps only the multiply-adds whose weight is kept (and, with a token
    budget, only those on the tokens that remain). ``sparsity`` is the achieved sparsity of the
    prunable weights.
    """

    sparsity: float
    params_total: int
    params_nonzero: int
    flops_dense: int
    flops_effective: int
    weights: tuple[WeightCost, ...] = ()

    @property
    def flops_reduction(self) -> float:
        """Dense over effective FLOPs (the theoretical speed-up)."""
        return self.flops_dense / max(self.flops_effective, 1)

    @property
    def per_layer(self) -> pd.DataFrame:
        """One row per prunable weight: layer (the weight's name), kind, shape, params, kept,
        sparsity, flops_dense, flops_effective (a new DataFrame on every access)."""
        return pd.DataFrame([
            {"layer": w.name, "kind": w.kind, "shape": "x".join(map(str, w.shape)), "params": w.params,
             "kept": w.kept, "sparsity": w.sparsity, "flops_dense": w.flops_dense,
             "flops_effective": w.flops_effective}
            for w in self.weights
        ])


@dataclass(frozen=True)
class Metrics(Cost):
    """A :class:`Cost` plus the measured metric (``accuracy``: the task's metric, a fraction for
    classification) and mean ``loss`` on ``samples`` evaluation samples.

    For an estimate on a subset (``estimate=True``), ``interval`` is the 95% interval of the
    full split's metric; for the full split it is ``(accuracy, accuracy)``.
    """

    accuracy: float = float("nan")
    loss: float = float("nan")
    samples: int = 0
    population: int = 0
    interval: tuple[float, float] = field(default=(float("nan"), float("nan")))
    estimate: bool = False
    metric_name: str = "accuracy"
    loss_name: str = "cross-entropy"


def cost_of(masks: dict[str, torch.Tensor], profile: ModelProfile, params_total: int,
            flops_dense: int | None = None, flops_scale: dict[str, float] | None = None) -> Cost:
    """Per-weight and whole-model sparsity, parameters and FLOPs of ``masks`` (missing weights are dense).

    ``flops_scale`` optionally scales each weight's FLOPs (a token budget running it on fewer
    tokens); ``flops_dense`` then is the token-pruned model's total before weight pruning. Each
    weight's ``flops_dense`` stays the dense model's; its ``flops_effective`` is what it costs
    under both the mask and the token budget.
    """
    rows, removed = [], 0
    for w in profile.weights:
        mask = masks.get(w.name)
        kept = w.numel if mask is None else int(mask.sum())
        scaled = w.flops_dense * (flops_scale or {}).get(w.name, 1.0)  # on the tokens that remain
        effective = int(round(scaled * kept / w.numel))
        removed += int(round(scaled)) - effective
        rows.append(WeightCost(
            name=w.name, kind=w.kind, shape=w.shape, params=w.numel, kept=kept,
            flops_dense=w.flops_dense, flops_effective=effective,
        ))
    prunable = sum(r.params for r in rows)
    kept = sum(r.kept for r in rows)
    total = profile.flops_dense if flops_dense is None else flops_dense
    return Cost(
        sparsity=1.0 - kept / prunable,
        params_total=params_total,
        params_nonzero=params_total - (prunable - kept),
        flops_dense=profile.flops_dense,
        flops_effective=total - removed,
        weights=tuple(rows),
    )
