"""Unstructured and semi-structured weight criteria: magnitude, global magnitude, LAMP, ERK, Unif+,
random, SNIP and N:M. Each is a registered :class:`~prunescope.explorer.pruning.base.PruningMethod`."""

from __future__ import annotations

import math
from typing import Any

import param
import torch

from prunescope.explorer.pruning.base import (
    Masks,
    PruningMethod,
    Ranking,
    ScoreContext,
    Scores,
    register_method,
)


@register_method
class Magnitude(PruningMethod):
    """Layer-wise magnitude pruning (Han et al., NeurIPS 2015): every weight tensor removes its
    smallest |w| at the same sparsity, so the global sparsity equals the target."""

    name = "magnitude"
    display_name = "Magnitude (layer-wise)"
    description = "Each weight tensor removes its smallest |w| at the same sparsity (Han et al., 2015)."


@register_method
class GlobalMagnitude(PruningMethod):
    """Global magnitude pruning: one |w| threshold across all prunable weights."""

    name = "global_magnitude"
    display_name = "Global magnitude"
    description = "One |w| threshold across all prunable weights."
    is_global = True


def lamp_scores(weight: torch.Tensor) -> torch.Tensor:
    """LAMP score (Lee et al., ICLR 2021): w_u^2 / sum of w_v^2 over the tensor's w_v^2 >= w_u^2."""
    sq = weight.detach().double().reshape(-1) ** 2
    ascending, _ = torch.sort(sq)
    below = torch.cat([ascending.new_zeros(1), torch.cumsum(ascending, 0)])  # below[i] = sum of first i
    n_smaller = torch.searchsorted(ascending, sq, side="left")
    at_least = below[-1] - below[n_smaller]
    score = torch.where(at_least > 0, sq / at_least.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    return score.reshape(weight.shape)


@register_method
class LAMP(PruningMethod):
    """Layer-adaptive magnitude-based pruning (Lee et al., ICLR 2021), one global threshold on LAMP scores."""

    name = "lamp"
    display_name = "LAMP"
    description = "Layer-adaptive magnitude score (Lee et al., ICLR 2021), one global threshold."
    is_global = True

    def scores(self, ctx: ScoreContext, options: dict[str, Any]) -> Scores:
        return {n: lamp_scores(w) for n, w in ctx.weights.items()}


def erk_densities(layers: list, sparsity: float) -> dict[str, float]:
    """Erdos-Renyi-Kernel densities (Evci et al., RigL, ICML 2020) scaled to keep ``1 - sparsity``.

    Density of a tensor is proportional to sum(shape) / prod(shape); tensors that would exceed
    density 1 are kept dense and the scale is solved again for the others.
    """
    total = sum(layer.numel for layer in layers)
    budget = (1.0 - sparsity) * total
    dense: set[str] = set()
    while True:
        free = [lay for lay in layers if lay.name not in dense]
        raw = {lay.name: sum(lay.shape) / lay.numel for lay in free}
        remaining = budget - sum(lay.numel for lay in layers if lay.name in dense)
        weighted = sum(raw[lay.name] * lay.numel for lay in free)
        scale = remaining / weighted if weighted > 0 else 0.0
        over = [name for name, r in raw.items() if r * scale > 1.0]
        if not over:
            break
        dense.update(over)
    densities = {name: 1.0 for name in dense}
    densities.update({name: min(1.0, max(0.0, r * scale)) for name, r in raw.items()})
    return densities


@register_method
class ERK(PruningMethod):
    """ERK layer densities (Evci et al., 2020) for the global budget, magnitude within each tensor."""

    name = "erk"
    display_name = "ERK + magnitude"
    description = "Erdos-Renyi-Kernel densities for the global budget (Evci et al., 2020), |w| within each tensor."

    def allocate(self, scores, ctx, names, sparsity, options) -> Masks:
        chosen = [w for w in ctx.layers if w.name in names]
        densities = erk_densities(chosen, sparsity)
        return {n: scores.layer_keep(n, 1.0 - densities[n]) for n in names}


def uniform_plus_sparsities(layers: list, sparsity: float) -> dict[str, float]:
    """Unif+ (Gale et al., 2019, as LAMP's baseline): the first tensor stays dense when it is a
    convolution, the last keeps at least 20% of its weights, the others share one sparsity
    solved so that the global target is met. An infeasible target is a ValueError."""
    if not layers:
        return {}
    first, last = layers[0], layers[-1]
    keep_first = first.is_conv and len(layers) > 1
    mid = [w for w in layers[1 if keep_first else 0 : -1]] if len(layers) > 1 else []
    total = sum(w.numel for w in layers)
    n_mid = sum(w.numel for w in mid)
    target = sparsity * total
    if len(layers) == 1:
        if sparsity > 0.8:
            raise ValueError(f"Unif+ keeps at least 20% of the last layer: sparsity {sparsity:g} > 0.8 is infeasible")
        return {last.name: sparsity}
    uniform = target / (n_mid + last.numel) if n_mid + last.numel else 0.0
    if uniform > 0.8:
        uniform = (target - 0.8 * last.numel) / n_mid if n_mid else math.inf
    if uniform >= 1.0:
        most = (n_mid * (1 - 1 / max(n_mid, 1)) + 0.8 * last.numel) / total
        raise ValueError(
            f"Unif+ cannot reach global sparsity {sparsity:g}: with the first conv dense and 20% of the "
            f"last layer kept, at most {most:.4f} is reachable"
        )
    result = {w.name: uniform for w in mid}
    result[last.name] = min(uniform, 0.8)
    if keep_first:
        result[first.name] = 0.0
    return result


@register_method
class UniformPlus(PruningMethod):
    """Unif+ (Gale et al., 2019; the baseline of Lee et al., ICLR 2021): uniform magnitude pruning
    that keeps a first convolution dense and at least 20% of the last layer, meeting the global target."""

    name = "uniform_plus"
    display_name = "Unif+ (uniform, first conv dense)"
    description = ("Uniform |w| pruning, first conv dense, last layer keeps >= 20%, global target met "
                   "(Gale et al., 2019; LAMP's baseline).")

    def validate_setting(self, setting, ctx: ScoreContext) -> None:
        """An infeasible target is refused when it is set, not later when the masks are computed."""
        hand = setting.overrides_dict
        uniform_plus_sparsities([w for w in ctx.layers if w.name not in hand], setting.sparsity)

    def allocate(self, scores, ctx, names, sparsity, options) -> Masks:
        chosen = [w for w in ctx.layers if w.name in names]
        per = uniform_plus_sparsities(chosen, sparsity)
        return {n: scores.layer_keep(n, per[n]) for n in names}


@register_method
class Random(PruningMethod):
    """Random pruning: uniformly random weights, the same exact count in every tensor (seeded)."""

    name = "random"
    display_name = "Random"
    description = "Uniformly random weights, the same exact count in every tensor (seeded)."
    uses_seed = True

    #: Offset of the generator seed: seed 0 must not replay ``torch.manual_seed(0)``, the stream
    #: that initialised the sample models (random scores would then rank theta_0's own values).
    SEED_OFFSET = 0x5EED_2019

    def scores(self, ctx: ScoreContext, options: dict[str, Any]) -> Scores:
        gen = torch.Generator().manual_seed(self.SEED_OFFSET + ctx.seed)
        return {n: torch.rand(w.shape, generator=gen) for n, w in ctx.weights.items()}


@register_method
class SNIP(PruningMethod):
    """SNIP (Lee et al., ICLR 2019): connection sensitivity |grad * w| on a seeded calibration batch."""

    name = "snip"
    display_name = "SNIP"
    description = "Connection sensitivity |grad * w| on a seeded calibration batch (Lee et al., 2019)."
    is_global = True
    uses_seed = True

    def scores(self, ctx: ScoreContext, options: dict[str, Any]) -> Scores:
        if ctx.gradients is None:
            raise ValueError("snip needs gradients: give the explorer calibration data")
        grads = ctx.gradients()
        return {n: (grads[n] * w).abs() for n, w in ctx.weights.items()}


def nm_groups(weight: torch.Tensor, m: int) -> torch.Tensor | None:
    """``weight`` as (out, groups, m) along its input dimension, or None if that is not divisible by m.

    Conv weights (out, in, *k) are grouped along input channels at each kernel position,
    i.e. laid out as (out, *k, in) first: the layout N:M sparse tensor cores use.
    """
    w = weight.movedim(1, -1) if weight.dim() > 2 else weight
    if w.shape[-1] % m:
        return None
    return w.reshape(w.shape[0], -1, m)


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` highest of every ``m`` consecutive input weights; dense if the input size does not divide."""
    groups = nm_groups(score, m)
    if groups is None:
        return torch.ones(score.shape, dtype=torch.bool)
    keep = torch.zeros(groups.shape, dtype=torch.bool)
    keep.scatter_(-1, torch.topk(groups, n, dim=-1).indices, True)
    if score.dim() > 2:
        moved = score.movedim(1, -1).shape
        return keep.reshape(moved).movedim(-1, 1).contiguous()
    return keep.reshape(score.shape)


class NMOptions(param.Parameterized):
    n = param.Integer(default=2, bounds=(1, 64), doc="N: weights kept in every group of M.")
    m = param.Integer(default=4, bounds=(2, 64), doc="M: consecutive input weights per group.")


@register_method
class NM(PruningMethod):
    """N:M semi-structured sparsity (Mishra et al., 2021, NVIDIA ASP): keep the N largest |w| of
    every M consecutive input weights. Tensors whose input size is not a multiple of M stay dense."""

    name = "nm"
    display_name = "N:M semi-structured"
    description = "Keep the N largest |w| of every M consecutive input weights (2:4 by default; Mishra et al., 2021)."
    Options = NMOptions

    def validate_options(self, options: dict[str, Any]) -> None:
        if not options["n"] < options["m"]:
            raise ValueError(f"N:M needs 1 <= n < m, got n={options['n']}, m={options['m']}")

    def fixed_sparsity(self, options: dict[str, Any]) -> float:
        return 1.0 - options["n"] / options["m"]

    sparsity_label = "Sparsity (fixed by N:M: 1 − N/M of each divisible tensor)"
    sparsity_is_global = False

    def layer_steps(self, options: dict[str, Any]) -> tuple[float, ...]:
        return (0.0, self.fixed_sparsity(options))

    def execution_format(self, options: dict[str, Any]) -> dict[str, Any]:
        return {"format": "nm", "n": options["n"], "m": options["m"]}

    def allocate(self, scores, ctx, names, sparsity, options) -> Masks:
        return {name: nm_mask(scores[name], options["n"], options["m"]) for name in names}

    def describe(self, setting) -> str:
        return f"{self.display_name} {setting.option('n')}:{setting.option('m')}"

    def locked_weights(self, ctx: ScoreContext, options: dict[str, Any]) -> dict[str, str]:
        m = options["m"]
        return {n: f"its input size {w.movedim(1, -1).shape[-1] if w.dim() > 2 else w.shape[-1]} is not a "
                   f"multiple of M={m}, so it stays dense"
                for n, w in ctx.weights.items() if nm_groups(w, m) is None}

    def layer_mask(self, scores: Ranking, name: str, sparsity: float, options: dict[str, Any]) -> torch.Tensor:
        n, m = options["n"], options["m"]
        if sparsity == 0:
            return torch.ones(scores[name].shape, dtype=torch.bool)
        if abs(sparsity - (1 - n / m)) > 1e-9:
            raise ValueError(f"an N:M weight's sparsity is 0 (dense) or 1 - n/m = {1 - n / m:g}, got {sparsity:g}")
        return nm_mask(scores[name], n, m)

    def layer_value(self, mask: torch.Tensor) -> float:
        return 1.0 - float(mask.float().mean())
