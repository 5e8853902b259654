"""The pruning-method protocol, its registry and the ranking helpers every criterion shares.

A method is a registered strategy object (like Captum's attribution classes): a ``name`` (what
``Explorer.prune`` takes), a ``display_name`` and a one-line ``description`` citing its paper, its
own options as ``param`` parameters of a nested ``Options`` class (bounds and docs), and one
verb, :meth:`PruningMethod.masks`: scores in, masks out. Everything the engine and the views need
to know about a method (fixed sparsity, structure, execution format, what its sparsity means) is
asked of the method; nothing outside this package branches on a method's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import param
import torch

from prunescope.explorer.core.registry import Registry
from prunescope.explorer.core.setting import Options, WeightSetting, freeze_options
from prunescope.explorer.core.weights import ModelProfile

Scores = dict[str, torch.Tensor]
Masks = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ScoreContext:
    """What a criterion may look at: dense weights (by parameter name), their profile, a seed,
    and lazily computed gradients and channel groups (the engine supplies the callables)."""

    weights: dict[str, torch.Tensor]
    profile: ModelProfile | None = None
    seed: int = 0
    gradients: Callable[[], dict[str, torch.Tensor]] | None = None
    channel_groups: Callable[[], list] | None = None

    @property
    def layers(self):
        """The profile's weights (the criteria's name for them)."""
        return self.profile.weights if self.profile is not None else ()


def prune_count(sparsity: float, numel: int) -> int:
    """Weights to remove for ``sparsity`` of ``numel``: ``round(sparsity * numel)``, as torch.nn.utils.prune."""
    return int(round(sparsity * numel))


def keep_highest(score: torch.Tensor, n_prune: int, order: torch.Tensor | None = None) -> torch.Tensor:
    """Mask of ``score``'s shape with its ``n_prune`` lowest entries removed (exact count)."""
    flat = torch.ones(score.numel(), dtype=torch.bool)
    if n_prune > 0:
        if order is None:
            order = torch.argsort(score.reshape(-1), stable=True)
        flat[order[:n_prune]] = False
    return flat.reshape(score.shape)


class Ranking(dict):
    """Scores ``{weight: tensor}`` with their ascending orders computed once and reused.

    Moving a slider only changes how many of the lowest-ranked weights go, so masks at a new
    sparsity cost one scatter instead of a sort.
    """

    def __init__(self, scores: Scores) -> None:
        super().__init__(scores)
        self._orders: dict[Any, torch.Tensor] = {}

    def order(self, name: str) -> torch.Tensor:
        if name not in self._orders:
            self._orders[name] = torch.argsort(self[name].reshape(-1), stable=True)
        return self._orders[name]

    def global_order(self, names: tuple[str, ...]) -> torch.Tensor:
        if names not in self._orders:
            flat = torch.cat([self[n].reshape(-1).double() for n in names])
            self._orders[names] = torch.argsort(flat, stable=True)
        return self._orders[names]

    def layer_keep(self, name: str, sparsity: float) -> torch.Tensor:
        """Weight ``name`` with its ``round(sparsity * numel)`` lowest scores removed."""
        score = self[name]
        return keep_highest(score, prune_count(sparsity, score.numel()), self.order(name))

    def global_keep(self, names: tuple[str, ...], sparsity: float) -> Masks:
        """One threshold across ``names``: remove the ``round(sparsity * total)`` lowest scores overall."""
        if not names:
            return {}
        order = self.global_order(names)
        keep = torch.ones(order.numel(), dtype=torch.bool)
        keep[order[: prune_count(sparsity, order.numel())]] = False
        masks, start = {}, 0
        for n in names:
            size = self[n].numel()
            masks[n] = keep[start : start + size].reshape(self[n].shape)
            start += size
        return masks


def check_sparsity(sparsity: Any, what: str = "sparsity") -> float:
    """``sparsity`` as a float in [0, 1), or a ValueError naming the value and the allowed range."""
    if isinstance(sparsity, bool):
        raise ValueError(f"{what} must be a number in [0, 1), got {sparsity!r}")
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number in [0, 1), got {sparsity!r}") from None
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{what} must be in [0, 1) (fraction of weights removed), got {sparsity!r}")
    return value


class NoOptions(param.Parameterized):
    """A method without options of its own."""


class PruningMethod:
    """Base criterion: rank weights by :meth:`scores`, keep the highest, one sparsity per weight tensor."""

    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: The method's own options (``param`` parameters with bounds and docs).
    Options: ClassVar[type[param.Parameterized]] = NoOptions
    #: One threshold across all weights (else one per weight tensor).
    is_global: ClassVar[bool] = False
    #: Removes whole channels (the per-weight value is a fraction of channels).
    is_structured: ClassVar[bool] = False
    #: Uses the seed (random scores, a calibration batch...).
    uses_seed: ClassVar[bool] = False
    #: What the sparsity slider means, in words for the UI.
    sparsity_label: ClassVar[str] = "Global sparsity (achieved, of the prunable weights)"
    #: Whether the asked sparsity is met as the achieved global sparsity of the prunable weights.
    sparsity_is_global: ClassVar[bool] = True
    #: Offered in the method pickers (a ticket is chosen from its run instead).
    selectable: ClassVar[bool] = True

    # ----------------------------------------------------------------- options
    def option_names(self) -> list[str]:
        return [p for p in self.Options.param if p != "name"]

    def check_options(self, options: dict[str, Any] | Options | None = None) -> Options:
        """All of the method's options, validated, defaults filled in, as a hashable tuple.

        Unknown names and values outside a parameter's bounds are ValueErrors naming them.
        """
        given = dict(options or {})
        allowed = self.option_names()
        bad = sorted(set(given) - set(allowed))
        if bad:
            raise ValueError(
                f"unknown option(s) {bad} for method {self.name!r}; "
                f"allowed: {allowed if allowed else 'none'}"
            )
        try:
            values = self.Options(**given)
        except (ValueError, TypeError) as err:
            raise ValueError(f"bad option for method {self.name!r}: {err}") from None
        result = {p: getattr(values, p) for p in allowed}
        self.validate_options(result)
        return freeze_options(result)

    def validate_options(self, options: dict[str, Any]) -> None:
        """Checks across options (e.g. n < m); raise ValueError."""

    def fixed_sparsity(self, options: dict[str, Any]) -> float | None:
        """The only sparsity this method can produce with ``options`` (N:M), else None."""
        return None

    def layer_steps(self, options: dict[str, Any]) -> tuple[float, ...] | None:
        """The only values a hand-set weight may take (e.g. dense or 1 - n/m), else None (any)."""
        return None

    def execution_format(self, options: dict[str, Any]) -> dict[str, Any]:
        """How sparse execution should run weights this method pruned: ``{"format": "csr"}``,
        ``{"format": "nm", "n": .., "m": ..}`` or ``{"format": "compacted"}``."""
        return {"format": "csr"}

    def score_options(self, options: dict[str, Any]) -> tuple:
        """The options the scores depend on (part of the score memo key)."""
        return ()

    # ----------------------------------------------------------------- the verb
    def scores(self, ctx: ScoreContext, options: dict[str, Any]) -> Scores:
        """Importance of each weight (higher = keep); independent of the sparsity. Default |w|."""
        return {n: w.abs() for n, w in ctx.weights.items()}

    def masks(self, scores: Ranking, ctx: ScoreContext, setting: WeightSetting) -> Masks:
        """Masks for every weight in ``scores``: hand-set weights (``setting.overrides``) at their
        sparsity, the others at the method's allocation of ``setting.sparsity`` among them."""
        options = dict(setting.options)
        overrides = setting.overrides_dict
        free = tuple(n for n in scores if n not in overrides)
        masks = self.allocate(scores, ctx, free, setting.sparsity, options)
        for name, value in overrides.items():
            masks[name] = self.layer_mask(scores, name, value, options)
        return masks

    def allocate(self, scores: Ranking, ctx: ScoreContext, names: tuple[str, ...], sparsity: float,
                 options: dict[str, Any]) -> Masks:
        """The method's own allocation of ``sparsity`` across ``names``."""
        if self.is_global:
            return scores.global_keep(names, sparsity)
        return {n: scores.layer_keep(n, sparsity) for n in names}

    def layer_mask(self, scores: Ranking, name: str, sparsity: float, options: dict[str, Any]) -> torch.Tensor:
        """Mask of weight ``name`` pruned by hand to ``sparsity`` with this criterion's ranking."""
        return scores.layer_keep(name, sparsity)

    def layer_value(self, mask: torch.Tensor) -> float:
        """A weight's value in the unit a hand-set override takes (fraction of weights removed)."""
        return 1.0 - float(mask.float().mean())

    def locked_weights(self, ctx: ScoreContext, options: dict[str, Any]) -> dict[str, str]:
        """Weights this method cannot prune with ``options``, with the reason (views disable them)."""
        return {}

    def validate_setting(self, setting: WeightSetting, ctx: ScoreContext) -> None:
        """Cheap checks of a whole setting when it is set (before any mask is computed).

        By default a hand-set sparsity on a locked weight is refused."""
        locked = self.locked_weights(ctx, dict(setting.options))
        for name, value in setting.overrides:
            if value > 0 and name in locked:
                raise ValueError(f"{self.display_name} cannot prune {name!r}: {locked[name]}")

    def describe(self, setting: WeightSetting) -> str:
        """A short human description of ``setting`` (one rounding: whole percent)."""
        return f"{self.display_name} {100 * setting.sparsity:.0f}%"

    def get_name(self) -> str:
        return self.display_name


#: Every pruning method by name (one instance each); a plain dict for reading.
METHODS: Registry[PruningMethod] = Registry("pruning method")


def register_method(cls: type[PruningMethod]) -> type[PruningMethod]:
    """Class decorator: add one instance of ``cls`` under ``cls.name``; a taken name is an error."""
    return METHODS.register(cls)


def unregister_method(name: str) -> None:
    """Remove a registered method (plug-ins and tests)."""
    METHODS.unregister(name)


def get_method(name: str) -> PruningMethod:
    """The criterion registered as ``name``; unknown names list the known ones."""
    return METHODS.lookup(name)
