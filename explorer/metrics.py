"""Results of one pruning setting: cost (instant) and metrics (measured on the evaluation data)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from prunescope.explorer.layers import ModelProfile


@dataclass(frozen=True)
class Cost:
    """What a setting costs, known without running the model (shown while a slider moves).

    ``params_*`` count all model parameters (biases and norms are never pruned); ``flops_*`` are
    per input sample, 2 per multiply-add, as torch.utils.flop_counter counts them;
    ``flops_effective`` keeps only the multiply-adds whose weight is kept.
    """

    sparsity: float
    params_total: int
    params_nonzero: int
    flops_dense: int
    flops_effective: int
    per_layer: pd.DataFrame

    @property
    def flops_reduction(self) -> float:
        """Dense over effective FLOPs (the theoretical speed-up)."""
        return self.flops_dense / max(self.flops_effective, 1)


@dataclass(frozen=True)
class Metrics(Cost):
    """A :class:`Cost` plus the measured ``accuracy`` (fraction in [0, 1]) and mean cross-entropy ``loss``."""

    accuracy: float = float("nan")
    loss: float = float("nan")
    samples: int = 0


def cost_of(masks: dict[str, torch.Tensor], profile: ModelProfile, params_total: int) -> Cost:
    """Per-layer and whole-model sparsity, parameters and FLOPs of ``masks`` (missing layers are dense)."""
    rows = []
    for layer in profile.layers:
        mask = masks.get(layer.name)
        kept = layer.numel if mask is None else int(mask.sum())
        rows.append(
            {
                "layer": layer.name,
                "kind": layer.kind,
                "shape": "x".join(map(str, layer.weight_shape)),
                "params": layer.numel,
                "kept": kept,
                "sparsity": 1.0 - kept / layer.numel,
                "flops_dense": layer.flops_dense,
                "flops_effective": 2 * kept * layer.positions,
            }
        )
    table = pd.DataFrame(rows)
    prunable = int(table["params"].sum())
    kept = int(table["kept"].sum())
    removed_flops = int((table["flops_dense"] - table["flops_effective"]).sum())
    return Cost(
        sparsity=1.0 - kept / prunable,
        params_total=params_total,
        params_nonzero=params_total - (prunable - kept),
        flops_dense=profile.flops_dense,
        flops_effective=profile.flops_dense - removed_flops,
        per_layer=table,
    )
