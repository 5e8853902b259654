"""A lottery ticket as a mask source: one level's masks of a persisted ticket search.

``ex.prune("ticket", run=path, level=-1)`` selects the masks that iterative magnitude pruning with
rewinding found (Frankle & Carbin, ICLR 2019; :mod:`prunescope.explorer.lottery`). Every tab then
shows that ticket. Its sparsity is the ticket's own; its masks are fixed (no hand-set weights).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import param
import torch

from prunescope.explorer.pruning.base import (
    Masks,
    PruningMethod,
    Ranking,
    ScoreContext,
    Scores,
    get_method,
    register_method,
)


class TicketOptions(param.Parameterized):
    run = param.String(default="", doc="Directory of a ticket search (prunescope ticket --out, or ex.find_ticket).")
    level = param.Integer(default=-1, bounds=(-1000, 1000), doc="Pruning level; -1 is the last completed one.")
    run_seed = param.Integer(default=-1, bounds=(-1, None), doc="Which seed's ticket; -1 is the run's first seed.")


@functools.lru_cache(maxsize=16)
def _load(path: str, stamp: float):
    from prunescope.explorer.lottery.runs import load_run

    return load_run(path)


def load_ticket_run(path: str):
    """The run at ``path`` (memoised until its run.json changes)."""
    if not path:
        raise ValueError("the ticket method needs run=<directory of a ticket search>")
    marker = Path(path) / "run.json"
    stamp = marker.stat().st_mtime if marker.exists() else 0.0
    return _load(str(Path(path).resolve()), stamp)


def ticket_reference(setting) -> tuple[str, int, int] | None:
    """``(run directory, level, run_seed)`` when the weight ``setting`` selects a ticket, else None
    (views ask this instead of comparing method names)."""
    if not isinstance(get_method(setting.method), Ticket):
        return None
    return setting.option("run"), setting.option("level"), setting.option("run_seed")


def ticket_masks_of(options: dict[str, Any]) -> Masks:
    run = load_ticket_run(options["run"])
    seed = None if options["run_seed"] < 0 else options["run_seed"]
    return run.masks(options["level"], seed)


@register_method
class Ticket(PruningMethod):
    """Masks of a lottery ticket (iterative magnitude pruning with rewinding) at one level."""

    name = "ticket"
    display_name = "Lottery ticket (from a run)"
    description = "One level's masks of a ticket search: IMP with rewinding (Frankle & Carbin, 2019)."
    Options = TicketOptions
    sparsity_label = "Sparsity (the ticket's own)"
    #: Not offered in the method picker until a run is chosen (the Tickets tab selects it).
    selectable = False

    def validate_options(self, options: dict[str, Any]) -> None:
        ticket_masks_of(options)  # the run exists, is a run, and has that level and seed

    def fixed_sparsity(self, options: dict[str, Any]) -> float:
        masks = ticket_masks_of(options)
        total = sum(m.numel() for m in masks.values())
        return 1.0 - sum(int(m.sum()) for m in masks.values()) / max(total, 1)

    def validate_setting(self, setting, ctx: ScoreContext) -> None:
        if setting.overrides:
            raise ValueError("a ticket's masks are fixed: hand-set weights are not available")
        self._masks(ctx, dict(setting.options))

    def locked_weights(self, ctx: ScoreContext, options: dict[str, Any] | None = None) -> dict[str, str]:
        return {n: "a ticket's masks are fixed" for n in ctx.weights}

    def _masks(self, ctx: ScoreContext, options: dict[str, Any]) -> Masks:
        masks = ticket_masks_of(options)
        wrong = [n for n in masks if n not in ctx.weights or tuple(masks[n].shape) != tuple(ctx.weights[n].shape)]
        if wrong:
            raise ValueError(f"the ticket at {options['run']} does not fit this model's prunable weights: {wrong}")
        return masks

    def scores(self, ctx: ScoreContext, options: dict[str, Any]) -> Scores:
        return {}

    def score_options(self, options: dict[str, Any]) -> tuple:
        return (options["run"], options["level"], options["run_seed"])

    def masks(self, scores: Ranking, ctx: ScoreContext, setting) -> Masks:
        masks = self._masks(ctx, dict(setting.options))
        return {n: masks[n].bool() if n in masks else torch.ones(w.shape, dtype=torch.bool)
                for n, w in ctx.weights.items()}

    def describe(self, setting) -> str:
        return f"Ticket level {setting.option('level')} of {Path(setting.option('run')).name}"
