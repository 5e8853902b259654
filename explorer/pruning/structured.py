"""Structured (channel) pruning over the traced graph's coupled channel groups.

Channels that must go together (outputs meeting at a residual add, a depthwise conv's inputs and
outputs, the BatchNorm and bias that follow a conv) form one group, found by
:func:`prunescope.explorer.core.graph.channel_groups`. A group's importance is the L1 or L2 norm
of its producers' output channels summed over the producers (Li et al., ICLR 2017, "Pruning
Filters for Efficient ConvNets"; grouped as in Fang et al., CVPR 2023, DepGraph).
"""

from __future__ import annotations

from typing import Any

import param
import torch

from prunescope.explorer.pruning.base import (
    Masks,
    PruningMethod,
    Ranking,
    ScoreContext,
    Scores,
    keep_highest,
    prune_count,
    register_method,
)


class ChannelOptions(param.Parameterized):
    norm = param.Selector(default="l1", objects=["l1", "l2"], doc="Norm of a channel's weights: 'l1' or 'l2'.")


def _group_key(index: int) -> str:
    return f"group:{index}"


@register_method
class Channel(PruningMethod):
    """Remove whole channels with the smallest norm, grouped through the traced graph, so that the
    masked model computes exactly what the compacted (physically smaller) network computes.
    The sparsity is the fraction of channels removed in every prunable group (a per-group target)."""

    name = "channel"
    display_name = "Channel (structured)"
    description = ("Remove whole channels with the smallest L1/L2 norm, coupled channels together "
                   "(residual adds, depthwise convs, BatchNorm; Li et al., 2017; Fang et al., 2023).")
    Options = ChannelOptions
    is_structured = True
    sparsity_label = "Channels removed per group"
    sparsity_is_global = False

    def score_options(self, options: dict[str, Any]) -> tuple:
        return (options["norm"],)

    def execution_format(self, options: dict[str, Any]) -> dict[str, Any]:
        return {"format": "compacted"}

    def scores(self, ctx: ScoreContext, options: dict[str, Any]) -> Scores:
        from prunescope.explorer.core.compact import group_scores

        groups = self._groups(ctx)
        per_group = group_scores(groups, ctx.weights, options["norm"])
        return {_group_key(i): s for i, s in per_group.items()}

    @staticmethod
    def _groups(ctx: ScoreContext) -> list:
        if ctx.channel_groups is None:
            raise ValueError("channel pruning needs the model's traced graph; the explorer supplies it")
        return ctx.channel_groups()

    def group_of(self, ctx: ScoreContext) -> dict[str, int]:
        """Which prunable group each producer weight writes (weights of unprunable groups are absent)."""
        owner: dict[str, int] = {}
        for g in self._groups(ctx):
            if g.prunable:
                for name, *_ in g.producers:
                    owner.setdefault(name, g.index)
        return owner

    def locked_weights(self, ctx: ScoreContext, options: dict[str, Any] | None = None) -> dict[str, str]:
        """Weights whose output channels cannot be removed, with the reason (for the UI)."""
        owner = self.group_of(ctx)
        reasons = {}
        for g in self._groups(ctx):
            if not g.prunable:
                for name, *_ in g.producers:
                    if name not in owner:
                        reasons[name] = g.reason
        return {n: r for n, r in reasons.items() if n in ctx.weights}

    def validate_setting(self, setting, ctx: ScoreContext) -> None:
        """Hand-set weights must write a prunable channel group (checked when set)."""
        if setting.overrides:
            self._fractions(ctx, setting)

    def _fractions(self, ctx: ScoreContext, setting) -> dict[int, float]:
        groups = self._groups(ctx)
        owner = self.group_of(ctx)
        fractions = {g.index: setting.sparsity for g in groups if g.prunable}
        for name, value in setting.overrides:
            if name not in owner:
                locked = self.locked_weights(ctx)
                why = locked.get(name, "it writes no prunable channel group")
                raise ValueError(f"channel pruning cannot remove output channels of {name!r}: {why}")
            fractions[owner[name]] = value
        return fractions

    def masks(self, scores: Ranking, ctx: ScoreContext, setting) -> Masks:
        from prunescope.explorer.core.compact import group_masks

        groups = self._groups(ctx)
        fractions = self._fractions(ctx, setting)
        keep = {i: self.channel_keep(scores[_group_key(i)], f) for i, f in fractions.items()}
        shapes = {n: tuple(w.shape) for n, w in ctx.weights.items()}
        masks = group_masks(groups, keep, shapes)
        return {n: masks.get(n, torch.ones(shapes[n], dtype=torch.bool)) for n in ctx.weights}

    def describe(self, setting) -> str:
        return f"{self.display_name}, {100 * setting.sparsity:.0f}% of channels ({setting.option('norm').upper()})"

    @staticmethod
    def channel_keep(norms: torch.Tensor, fraction: float) -> torch.Tensor:
        """Boolean keep-vector over channels; always keeps at least one channel."""
        n_remove = min(prune_count(fraction, norms.numel()), norms.numel() - 1)
        return keep_highest(norms, n_remove)

    def layer_value(self, mask: torch.Tensor) -> float:
        return 1.0 - float(mask.flatten(1).any(1).float().mean())

    def layer_mask(self, scores, name, sparsity, options):  # pragma: no cover - masks() handles overrides
        raise NotImplementedError("channel pruning sets weights through masks(overrides=...)")
