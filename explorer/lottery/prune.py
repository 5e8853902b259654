"""One pruning step of a ticket search, on the project's registered criteria.

:func:`prune_step` is the only place the lottery package talks to ``explorer.pruning``: if the
criteria API changes, adapt this function alone.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from prunescope.explorer.pruning import PruningMethod, ScoreContext, get_method

Masks = dict[str, torch.Tensor]


def check_fraction(fraction: float, what: str = "prune_per_round") -> float:
    """``fraction`` as a float strictly inside (0, 1), or a ValueError naming it and the range."""
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number in (0, 1), got {fraction!r}") from None
    if not 0.0 < value < 1.0:
        raise ValueError(f"{what} must be in (0, 1) (fraction of the remaining weights removed), got {fraction!r}")
    return value


def check_criterion(criterion: str) -> PruningMethod:
    """The registered criterion ``criterion`` if it ranks single weights; else a ValueError."""
    method = get_method(criterion)
    if method.is_structured or type(method).allocate is not PruningMethod.allocate:
        raise ValueError(
            f"criterion {criterion!r} allocates sparsity its own way and cannot prune a fraction of "
            "the remaining weights; use a score-ranking criterion such as global_magnitude, magnitude, lamp, random"
        )
    return method


def is_global(criterion: str) -> bool:
    """Whether ``criterion`` ranks all prunable weights against one threshold."""
    return bool(get_method(criterion).is_global)


def prune_step(
    criterion: str,
    weights: dict[str, torch.Tensor],
    masks: Masks,
    fraction: float | Mapping[str, float],
    seed: int,
    *,
    gradients: Callable[[], dict[str, torch.Tensor]] | None = None,
) -> Masks:
    """Remove ``fraction`` of the weights still kept by ``masks``, ranked by ``criterion``.

    Scores come from the registered criterion (``get_method(criterion).scores``); weights already
    pruned score -inf so they stay pruned. Global criteria remove ``round(fraction * kept)``
    lowest scores across all of ``weights``; layer-wise ones remove ``round(fraction_l * kept_l)``
    in each layer, where ``fraction`` may be a per-layer mapping. Ties break by position (stable).
    """
    method = check_criterion(criterion)
    if set(masks) != set(weights):
        raise ValueError(f"masks {sorted(masks)} and weights {sorted(weights)} must name the same tensors")
    ctx = ScoreContext(weights=dict(weights), seed=int(seed), gradients=gradients)
    scores = method.scores(ctx, dict(method.check_options({})))
    names = list(weights)
    ranked = {}
    for n in names:
        s = scores[n].detach().double().reshape(-1).clone()
        s[~masks[n].reshape(-1)] = float("-inf")
        ranked[n] = s
    if method.is_global:
        if isinstance(fraction, Mapping):
            raise ValueError(f"{criterion!r} is global: give one fraction, not a per-layer mapping")
        flat = torch.cat([ranked[n] for n in names])
        keep = _drop_lowest(flat, fraction)
        out, start = {}, 0
        for n in names:
            size = ranked[n].numel()
            out[n] = keep[start : start + size].reshape(masks[n].shape)
            start += size
        return out
    out = {}
    for n in names:
        f = fraction[n] if isinstance(fraction, Mapping) else fraction
        out[n] = _drop_lowest(ranked[n], f).reshape(masks[n].shape)
    return out


def _drop_lowest(flat: torch.Tensor, fraction: float) -> torch.Tensor:
    """Keep-vector: the already-pruned (-inf) entries plus ``round(fraction * kept)`` lowest removed."""
    pruned = int(torch.isneginf(flat).sum())
    n_drop = pruned + int(round(float(fraction) * (flat.numel() - pruned)))
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    order = torch.argsort(flat, stable=True)
    keep[order[:n_drop]] = False
    return keep


def schedule_fraction(criterion: str, masks: Masks, p: float, level: int) -> float | dict[str, float]:
    """Fraction of the kept weights to remove so that level ``level`` keeps ``round(N * (1-p)^level)``.

    ``N`` is the whole prunable count for global criteria and each layer's count for layer-wise
    ones: rounding once against the schedule (not once per round) keeps the sparsity after R
    rounds within one weight of ``1 - (1-p)^R``.
    """

    def frac(numel: int, kept: int) -> float:
        target = int(round(numel * (1.0 - p) ** level))
        return 0.0 if kept == 0 else max(0.0, (kept - target) / kept)

    if is_global(criterion):
        return frac(sum(m.numel() for m in masks.values()), sum(int(m.sum()) for m in masks.values()))
    return {n: frac(m.numel(), int(m.sum())) for n, m in masks.items()}


def random_mask_like(masks: Masks, seed: int) -> Masks:
    """Uniformly random masks with exactly each layer's kept count of ``masks`` (seeded control)."""
    gen = torch.Generator().manual_seed(int(seed))
    out = {}
    for n, m in masks.items():
        flat = torch.zeros(m.numel(), dtype=torch.bool)
        flat[torch.randperm(m.numel(), generator=gen)[: int(m.sum())]] = True
        out[n] = flat.reshape(m.shape)
    return out


def intersect(masks_list: list[Masks]) -> Masks:
    """Weights kept by every mask in ``masks_list`` (COLT's overlapping ticket)."""
    out = {n: m.clone() for n, m in masks_list[0].items()}
    for masks in masks_list[1:]:
        for n in out:
            out[n] &= masks[n]
    return out


def sparsity_of(masks: Masks) -> float:
    """Fraction of the masked weights that are pruned."""
    total = sum(m.numel() for m in masks.values())
    return 1.0 - sum(int(m.sum()) for m in masks.values()) / total if total else 0.0
