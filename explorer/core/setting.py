"""One setting type: what the user chose, as an immutable, hashable value.

A :class:`Setting` has a weight part (:class:`WeightSetting`: a pruning method, its target
sparsity, per-weight overrides, the method's own options and a seed) and an optional token part
(:class:`TokenSetting`: a token strategy and per-block budgets). Every result the engine computes
is a pure function of (model snapshot, data, setting) and is memoised by it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

Options = tuple[tuple[str, Any], ...]


def freeze_options(options: Mapping[str, Any] | Options | None) -> Options:
    """``options`` as a sorted tuple of ``(name, value)`` pairs (hashable, order-free)."""
    if not options:
        return ()
    items = options.items() if isinstance(options, Mapping) else options
    return tuple(sorted((str(k), v) for k, v in items))


@dataclass(frozen=True)
class WeightSetting:
    """Weight pruning: ``method`` at ``sparsity`` with hand-set ``overrides`` per prunable weight.

    ``sparsity`` is the target the method is asked for (its meaning is the method's: most methods
    meet it as the achieved global sparsity of the prunable weights). ``overrides`` are
    ``(weight name, sparsity)`` pairs; ``options`` the method's own options, complete (every
    option at its value, defaults filled in by the method), so two equal settings mean the same.
    """

    method: str = "magnitude"
    sparsity: float = 0.0
    overrides: tuple[tuple[str, float], ...] = ()
    options: Options = ()
    seed: int = 0

    def option(self, name: str, default: Any = None) -> Any:
        """The value of option ``name`` (``default`` if the setting does not carry it)."""
        return dict(self.options).get(name, default)

    @property
    def overrides_dict(self) -> dict[str, float]:
        return dict(self.overrides)


@dataclass(frozen=True)
class TokenSetting:
    """Token pruning: ``strategy`` with ``keep[b]``, the fraction of the original patch tokens
    block ``b`` processes (1.0 = all). ``options`` are the strategy's own, complete."""

    strategy: str = "cls_attention"
    keep: tuple[float, ...] = ()
    options: Options = ()
    seed: int = 0

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.options).get(name, default)

    @property
    def is_dense(self) -> bool:
        """True when every block keeps every token (the dense model)."""
        return all(k >= 1.0 for k in self.keep)


@dataclass(frozen=True)
class Setting:
    """The whole setting: weights and (optionally) tokens, both applied in one forward."""

    weights: WeightSetting = field(default_factory=WeightSetting)
    tokens: TokenSetting | None = None

    def with_weights(self, **changes: Any) -> "Setting":
        return replace(self, weights=replace(self.weights, **changes))

    @property
    def is_dense(self) -> bool:
        w = self.weights
        dense_w = w.sparsity == 0 and all(s == 0 for _, s in w.overrides)
        return dense_w and (self.tokens is None or self.tokens.is_dense)


#: The dense model.
DENSE = Setting()
