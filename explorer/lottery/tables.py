"""Tidy tables the Tickets views draw (Bokeh in the app, matplotlib for papers): one function each."""

from __future__ import annotations

import itertools
import os

import pandas as pd
import torch

from prunescope.explorer.lottery.overlap import mask_overlap
from prunescope.explorer.lottery.runs import TicketRun, load_run

Masks = dict[str, torch.Tensor]


def accuracy_vs_sparsity(run: TicketRun) -> pd.DataFrame:
    """Per kind ('ticket', 'reinit', 'random') and level: mean sparsity, mean/std/min/max accuracy, n seeds."""
    df = run.metrics()
    cols = ["kind", "level", "sparsity", "accuracy_mean", "accuracy_std", "accuracy_min", "accuracy_max", "n"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    out = df.groupby(["kind", "level"]).agg(
        sparsity=("sparsity", "mean"), accuracy_mean=("accuracy", "mean"), accuracy_std=("accuracy", "std"),
        accuracy_min=("accuracy", "min"), accuracy_max=("accuracy", "max"), n=("accuracy", "size"),
    ).reset_index()
    return out[cols]


def labelled_masks(run: TicketRun, levels: list[int] | None = None, seeds: list[int] | None = None) -> dict[str, Masks]:
    """``{'seed 0, level 3': masks, ...}`` of the run's completed tickets (for :func:`overlap_matrix`)."""
    out = {}
    for seed in seeds if seeds is not None else run.seeds:
        done = run.completed_levels(seed)
        for level in levels if levels is not None else done:
            if level in done:
                out[f"seed {seed}, level {level}"] = run.masks(level, seed)
    return out


def seed_overlap_by_level(run: TicketRun) -> pd.DataFrame:
    """Per level, layer (and 'overall') and pair of seeds: Jaccard of their tickets and the random expectation.

    Columns: level, sparsity, layer, seed_a, seed_b, jaccard, random_jaccard.
    """
    rows = []
    for a, b in itertools.combinations(run.seeds, 2):
        for level in sorted(set(run.completed_levels(a)) & set(run.completed_levels(b))):
            ma, mb = run.masks(level, a), run.masks(level, b)
            sp = 1 - sum(int(m.sum()) for m in ma.values()) / sum(m.numel() for m in ma.values())
            for r in mask_overlap(ma, mb).itertuples():
                rows.append({"level": level, "sparsity": sp, "layer": r.layer, "seed_a": a, "seed_b": b,
                             "jaccard": r.jaccard, "random_jaccard": r.random_jaccard})
    return pd.DataFrame(rows, columns=["level", "sparsity", "layer", "seed_a", "seed_b", "jaccard", "random_jaccard"])


def ticket_masks(run: TicketRun | str | os.PathLike, level: int = -1, seed: int | None = None,
                 params: dict[str, torch.Tensor] | None = None) -> Masks:
    """One level's masks of a run (or a run directory), checked against ``params`` (name -> tensor).

    The mask source behind ``Explorer.prune('ticket', run=..., level=k)``: names and shapes must
    match the model's parameters, else a ValueError says which do not.
    """
    if not isinstance(run, TicketRun):
        run = load_run(run)
    masks = run.masks(level, seed)
    if params is not None:
        unknown = [n for n in masks if n not in params]
        wrong = [n for n in masks if n in params and tuple(params[n].shape) != tuple(masks[n].shape)]
        if unknown or wrong:
            raise ValueError(
                f"the ticket at {run.path or '(memory)'} (model {run.config['model']['name']!r}) does not fit this "
                f"model: unknown weights {unknown}, wrong shapes {wrong}"
            )
    return masks
