"""Pruning criteria as strategy objects: scores in, masks out.

Each criterion has a registry ``name`` (what ``Explorer.prune`` takes), a ``display_name`` for the
UI, ``scores(ctx)`` (the expensive, sparsity-independent part, memoised by the engine) and one
verb, ``masks(scores, layers, sparsity, overrides, **options)``. A mask is a ``torch.bool``
tensor of the weight's shape, True = kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch

from prunescope.explorer.layers import LayerInfo

Scores = dict[str, torch.Tensor]
Masks = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ScoreContext:
    """What a criterion may look at: the (dense) weights, the layers, a seed and gradients."""

    weights: dict[str, torch.Tensor]
    layers: tuple[LayerInfo, ...]
    seed: int = 0
    gradients: Callable[[], dict[str, torch.Tensor]] | None = None


def prune_count(sparsity: float, numel: int) -> int:
    """Weights to remove for ``sparsity`` of ``numel``: ``round(sparsity * numel)``, as torch.nn.utils.prune."""
    return int(round(sparsity * numel))


def keep_highest(score: torch.Tensor, n_prune: int, order: torch.Tensor | None = None) -> torch.Tensor:
    """Mask of ``score``'s shape with its ``n_prune`` lowest entries removed (exact count).

    ``order`` is ``score``'s stable ascending argsort when the caller has it cached.
    """
    flat = torch.ones(score.numel(), dtype=torch.bool)
    if n_prune > 0:
        if order is None:
            order = torch.argsort(score.reshape(-1), stable=True)
        flat[order[:n_prune]] = False
    return flat.reshape(score.shape)


class Ranking(dict):
    """Scores ``{layer: tensor}`` with their ascending orders computed once and reused.

    Moving a slider only changes how many of the lowest-ranked weights go, so masks at a new
    sparsity cost one scatter instead of a sort.
    """

    def __init__(self, scores: Scores) -> None:
        super().__init__(scores)
        self._orders: dict[Any, torch.Tensor] = {}

    def order(self, name: str) -> torch.Tensor:
        """Stable ascending argsort of layer ``name``'s flattened scores."""
        if name not in self._orders:
            self._orders[name] = torch.argsort(self[name].reshape(-1), stable=True)
        return self._orders[name]

    def global_order(self, names: tuple[str, ...]) -> torch.Tensor:
        """Stable ascending argsort of the scores of ``names`` concatenated in that order."""
        if names not in self._orders:
            flat = torch.cat([self[n].reshape(-1) for n in names])
            self._orders[names] = torch.argsort(flat, stable=True)
        return self._orders[names]

    def layer_keep(self, name: str, sparsity: float) -> torch.Tensor:
        """Layer ``name`` with its ``round(sparsity * numel)`` lowest scores removed."""
        score = self[name]
        return keep_highest(score, prune_count(sparsity, score.numel()), self.order(name))


def global_masks(scores: Ranking, sparsity: float) -> Masks:
    """One threshold across layers: remove the ``round(sparsity * total)`` lowest scores overall."""
    names = tuple(scores)
    order = scores.global_order(names)
    keep = torch.ones(order.numel(), dtype=torch.bool)
    keep[order[: prune_count(sparsity, order.numel())]] = False
    masks, start = {}, 0
    for n in names:
        size = scores[n].numel()
        masks[n] = keep[start : start + size].reshape(scores[n].shape)
        start += size
    return masks


def check_sparsity(sparsity: float, what: str = "sparsity") -> float:
    """``sparsity`` as a float in [0, 1), or a ValueError naming the value and the allowed range."""
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number in [0, 1), got {sparsity!r}") from None
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{what} must be in [0, 1) (fraction of weights removed), got {sparsity!r}")
    return value


class PruningMethod:
    """Base criterion: layer-wise ranking by ``scores`` at one sparsity for every layer."""

    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: Whether ``masks`` uses one threshold across all layers (else one per layer).
    is_global: ClassVar[bool] = False
    #: Structured along the layer chain: needs scores of every layer, excluded ones included.
    is_structured: ClassVar[bool] = False

    def scores(self, ctx: ScoreContext, **options) -> Scores:
        """Importance of each weight (higher = keep); independent of the sparsity. Default |w|."""
        return {n: w.abs() for n, w in ctx.weights.items()}

    def masks(
        self, scores: Ranking, layers: tuple[LayerInfo, ...], sparsity: float,
        overrides: dict[str, float] | None = None, **options,
    ) -> Masks:
        """Masks at ``sparsity`` for the layers in ``scores``; ``overrides`` set single layers by hand."""
        masks = self.select(scores, layers, sparsity, **options)
        for name, layer_sparsity in (overrides or {}).items():
            masks[name] = self.layer_mask(scores, name, layer_sparsity, **options)
        return masks

    def select(self, scores: Ranking, layers: tuple[LayerInfo, ...], sparsity: float, **options) -> Masks:
        """The criterion's own allocation of ``sparsity`` across layers."""
        if self.is_global:
            return global_masks(scores, sparsity)
        return {n: scores.layer_keep(n, sparsity) for n in scores}

    def layer_mask(self, scores: Ranking, name: str, sparsity: float, **options) -> torch.Tensor:
        """Mask of layer ``name`` pruned by hand to ``sparsity`` with this criterion's ranking."""
        return scores.layer_keep(name, sparsity)

    def get_name(self) -> str:
        return self.display_name


METHODS: dict[str, PruningMethod] = {}


def register_method(cls: type[PruningMethod]) -> type[PruningMethod]:
    """Class decorator: add one instance of ``cls`` to :data:`METHODS` under ``cls.name``."""
    METHODS[cls.name] = cls()
    return cls


def get_method(name: str) -> PruningMethod:
    """The criterion registered as ``name``; unknown names list the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown pruning method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


@register_method
class Magnitude(PruningMethod):
    name = "magnitude"
    display_name = "Magnitude (layer-wise)"
    description = "Each layer removes its smallest |w| at the same sparsity."


@register_method
class GlobalMagnitude(PruningMethod):
    name = "global_magnitude"
    display_name = "Global magnitude"
    description = "One |w| threshold across all layers."
    is_global = True


def lamp_scores(weight: torch.Tensor) -> torch.Tensor:
    """LAMP score (Lee et al., 2021): w_u^2 / sum of w_v^2 over the layer's w_v^2 >= w_u^2."""
    sq = weight.detach().double().reshape(-1) ** 2
    ascending, _ = torch.sort(sq)
    below = torch.cat([ascending.new_zeros(1), torch.cumsum(ascending, 0)])  # below[i] = sum of first i
    n_smaller = torch.searchsorted(ascending, sq, side="left")
    at_least = below[-1] - below[n_smaller]
    score = torch.where(at_least > 0, sq / at_least.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    return score.reshape(weight.shape)


@register_method
class LAMP(PruningMethod):
    name = "lamp"
    display_name = "LAMP"
    description = "Layer-adaptive magnitude score (Lee et al., ICLR 2021), one global threshold."
    is_global = True

    def scores(self, ctx: ScoreContext, **options) -> Scores:
        return {n: lamp_scores(w) for n, w in ctx.weights.items()}


def erk_densities(layers: list[LayerInfo], sparsity: float) -> dict[str, float]:
    """Erdos-Renyi-Kernel densities (Evci et al., RigL) scaled to keep ``1 - sparsity`` of the weights.

    Density of a layer is proportional to sum(shape) / prod(shape); layers that would exceed
    density 1 are kept dense and the scale is solved again for the others.
    """
    total = sum(layer.numel for layer in layers)
    budget = (1.0 - sparsity) * total
    dense: set[str] = set()
    while True:
        free = [lay for lay in layers if lay.name not in dense]
        raw = {lay.name: sum(lay.weight_shape) / lay.numel for lay in free}
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
    name = "erk"
    display_name = "ERK + magnitude"
    description = "Erdos-Renyi-Kernel layer densities for the global budget, |w| within each layer."

    def select(self, scores: Scores, layers: tuple[LayerInfo, ...], sparsity: float, **options) -> Masks:
        chosen = [lay for lay in layers if lay.name in scores]
        densities = erk_densities(chosen, sparsity)
        return {n: scores.layer_keep(n, 1.0 - densities[n]) for n in scores}


@register_method
class Random(PruningMethod):
    name = "random"
    display_name = "Random"
    description = "Uniformly random weights, the same exact count in every layer (seeded)."

    def scores(self, ctx: ScoreContext, **options) -> Scores:
        gen = torch.Generator().manual_seed(ctx.seed)
        return {n: torch.rand(w.shape, generator=gen) for n, w in ctx.weights.items()}


@register_method
class SNIP(PruningMethod):
    name = "snip"
    display_name = "SNIP"
    description = "Connection sensitivity |grad * w| on a seeded calibration batch (Lee et al., 2019)."
    is_global = True

    def scores(self, ctx: ScoreContext, **options) -> Scores:
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


def check_nm(n: int, m: int) -> tuple[int, int]:
    """Validate an N:M pattern: integers with 1 <= n < m."""
    if not (isinstance(n, int) and isinstance(m, int)) or isinstance(n, bool) or isinstance(m, bool):
        raise ValueError(f"N:M needs integers n and m, got n={n!r}, m={m!r}")
    if not 1 <= n < m:
        raise ValueError(f"N:M needs 1 <= n < m, got n={n}, m={m}")
    return n, m


@register_method
class NM(PruningMethod):
    name = "nm"
    display_name = "N:M semi-structured"
    description = "Keep the N largest |w| of every M consecutive input weights (2:4 by default)."

    def select(self, scores, layers, sparsity, n: int = 2, m: int = 4, **options) -> Masks:
        n, m = check_nm(n, m)
        return {name: nm_mask(s, n, m) for name, s in scores.items()}

    def layer_mask(self, scores, name, sparsity, n: int = 2, m: int = 4, **options) -> torch.Tensor:
        n, m = check_nm(n, m)
        score = scores[name]
        if sparsity == 0:
            return torch.ones(score.shape, dtype=torch.bool)
        if abs(sparsity - (1 - n / m)) > 1e-9:
            raise ValueError(f"an N:M layer's sparsity is 0 (dense) or 1 - n/m = {1 - n / m:g}, got {sparsity:g}")
        return nm_mask(score, n, m)


def channel_norms(weight: torch.Tensor, norm: str) -> torch.Tensor:
    """Norm of each output channel's weights: 'l1' or 'l2'."""
    if norm not in ("l1", "l2"):
        raise ValueError(f"channel norm must be 'l1' or 'l2', got {norm!r}")
    flat = weight.detach().reshape(weight.shape[0], -1)
    return flat.abs().sum(1) if norm == "l1" else flat.pow(2).sum(1).sqrt()


def input_mask_for(kept_out: torch.Tensor, consumer: LayerInfo) -> torch.Tensor:
    """Which of ``consumer``'s input features survive when its producer keeps channels ``kept_out``.

    A Linear after a flattened conv sees each channel as a contiguous block of features.
    """
    producer_channels = kept_out.numel()
    fan_in = consumer.in_channels
    if fan_in % producer_channels:
        raise ValueError(
            f"channel pruning needs a chain of layers: {consumer.name!r} has {fan_in} inputs, "
            f"not a multiple of the {producer_channels} channels of the layer before it"
        )
    return kept_out.repeat_interleave(fan_in // producer_channels)


@register_method
class Channel(PruningMethod):
    name = "channel"
    display_name = "Channel (structured)"
    is_structured = True
    description = (
        "Remove whole output channels/neurons with the smallest L1 or L2 norm, and the next layer's "
        "inputs that depended on them. Sparsity = fraction of channels removed per layer."
    )

    def scores(self, ctx: ScoreContext, norm: str = "l1", **options) -> Scores:
        return {n: channel_norms(w, norm) for n, w in ctx.weights.items()}

    def masks(self, scores, layers, sparsity, overrides=None, **options) -> Masks:
        order = [lay for lay in layers if lay.name in scores]
        fractions = {lay.name: sparsity for lay in order}
        fractions.update(overrides or {})
        all_layers = list(layers)
        last = all_layers[-1].name
        if fractions.get(last, 0) > 0 and last in (overrides or {}):
            raise ValueError(f"channel pruning keeps the outputs of the last layer {last!r}: they are the model's outputs")
        masks: Masks = {}
        kept_out: dict[str, torch.Tensor] = {}
        for lay in all_layers:
            if lay.name in scores and lay is not all_layers[-1]:
                kept_out[lay.name] = self.channel_keep(scores[lay.name], fractions[lay.name])
        for i, lay in enumerate(all_layers):
            if lay.name not in scores:
                continue
            mask = torch.ones(lay.weight_shape, dtype=torch.bool)
            if lay.name in kept_out:
                mask[~kept_out[lay.name]] = False
            producer = all_layers[i - 1].name if i > 0 else None
            if producer in kept_out:
                inputs = input_mask_for(kept_out[producer], lay)
                mask[:, ~inputs] = False
            masks[lay.name] = mask
        return masks

    @staticmethod
    def channel_keep(norms: torch.Tensor, fraction: float) -> torch.Tensor:
        """Boolean keep-vector over channels; always keeps at least one channel."""
        n_remove = min(prune_count(fraction, norms.numel()), norms.numel() - 1)
        return keep_highest(norms, n_remove)

    def layer_mask(self, scores, name, sparsity, **options):  # pragma: no cover - masks() handles overrides
        raise NotImplementedError("channel pruning sets layers through masks(overrides=...)")
