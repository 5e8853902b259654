"""Ticket-search variants (IMP, COLT, SWAMP) and the stability of a rewind point.

A variant says which trainings one level needs (data split and batch-order seed of each), how
their results become the level's weights, and which weights the next mask is pruned from:

- ``imp``: one training; prune it (Frankle & Carbin, 2019; with rewinding, Frankle et al., 2020).
- ``colt``: also one training per disjoint data split; each split's weights are pruned and the
  next mask is the intersection of their masks (overlapping tickets, COLT), retrained each round.
- ``swamp``: several particles from the same ticket with different batch orders, weights
  averaged; the average is evaluated and pruned (SWAMP, Sparse Weight Averaging with Multiple
  Particles; cf. Sparse Model Soups).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd
import torch
from torch import nn

from prunescope.explorer.lottery.distributed import executor_for
from prunescope.explorer.lottery.prune import intersect, prune_step, schedule_fraction
from prunescope.explorer.lottery.trainer import (
    Data, Masks, State, average_states, evaluate_state, train_masked,
)


def seed_mix(*parts: Any) -> int:
    """A 31-bit seed derived from ``parts`` (stable across processes and Python versions)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class Job:
    """One training of a level: which data (``'train'`` or ``'split<i>'``) and its batch-order seed."""

    data: str
    seed: int


class Variant:
    """IMP: one training per level, pruned on the schedule ``round(N (1-p)^level)``."""

    name: ClassVar[str] = "imp"

    def __init__(self, splits: int = 2, particles: int = 3) -> None:
        self.splits, self.particles = splits, particles

    def jobs(self, seed: int, level: int) -> list[Job]:
        return [Job("train", seed_mix(seed, level, "train"))]

    def reduce(self, results: list[State]) -> tuple[State, list[State], dict[str, Any]]:
        """``(weights evaluated at this level, weights to prune for the next, extra metrics)``."""
        return results[0], [results[0]], {}

    def next_masks(self, criterion: str, sources: list[State], masks: Masks, p: float,
                   level: int, seed: int, gradients_for) -> Masks:
        src = sources[0]
        fraction = schedule_fraction(criterion, masks, p, level + 1)
        return prune_step(criterion, {n: src[n] for n in masks}, masks, fraction,
                          seed_mix(seed, level + 1, "prune"), gradients=gradients_for(src))


class Colt(Variant):
    name = "colt"

    def jobs(self, seed: int, level: int) -> list[Job]:
        return super().jobs(seed, level) + [
            Job(f"split{i}", seed_mix(seed, level, "split", i)) for i in range(self.splits)
        ]

    def reduce(self, results):
        return results[0], results[1:], {}

    def next_masks(self, criterion, sources, masks, p, level, seed, gradients_for):
        # each split prunes p of the remaining weights; the intersection may prune more
        per_split = [
            prune_step(criterion, {n: s[n] for n in masks}, masks, p,
                       seed_mix(seed, level + 1, "prune", i), gradients=gradients_for(s))
            for i, s in enumerate(sources)
        ]
        return intersect(per_split)


class Swamp(Variant):
    name = "swamp"

    def jobs(self, seed: int, level: int) -> list[Job]:
        return [Job("train", seed_mix(seed, level, "particle", i)) for i in range(self.particles)]

    def reduce(self, results):
        avg = average_states(results)
        return avg, [avg], {"particles": len(results)}


VARIANTS: dict[str, type[Variant]] = {v.name: v for v in (Variant, Colt, Swamp)}


def get_variant(name: str, splits: int = 2, particles: int = 3) -> Variant:
    """The variant ``name`` ('imp', 'colt', 'swamp') with its split / particle counts checked."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    if not isinstance(splits, int) or splits < 2:
        raise ValueError(f"splits must be an integer >= 2, got {splits!r}")
    if not isinstance(particles, int) or particles < 2:
        raise ValueError(f"particles must be an integer >= 2, got {particles!r}")
    return VARIANTS[name](splits=splits, particles=particles)


def data_splits(train_data: Data, splits: int, seed: int) -> dict[str, Data]:
    """``{'split0': ..., }``: ``splits`` disjoint, near-equal random parts of ``train_data`` (seeded)."""
    x, y = train_data
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed_mix(seed, "colt-splits")))
    return {f"split{i}": (x[idx], y[idx]) for i, idx in enumerate(torch.tensor_split(order, splits))}


@dataclass
class StabilityResult:
    """Linear mode connectivity of two trainings from one rewind point (Frankle et al., 2020)."""

    l2_distance: float
    path: pd.DataFrame  # columns: alpha, error, loss
    instability: float  # highest error on the path minus the mean error of its ends


def interpolate(a: State, b: State, alpha: float) -> State:
    """``(1 - alpha) a + alpha b`` for floating tensors; others taken from ``a``."""
    return {k: (1 - alpha) * v + alpha * b[k] if v.is_floating_point() else v.clone() for k, v in a.items()}


def stability(
    model: nn.Module, start_state: State, masks: Masks, train_data: Data, eval_data: Data, *,
    epochs: int, lr: float, seeds: tuple[int, int] = (0, 1), points: int = 11, batch_size: int = 64,
    optimizer: str = "adam", client: Any = None,
) -> StabilityResult:
    """Train twice from ``start_state`` with ``masks`` and two batch orders; measure their distance.

    Returns the L2 distance between the two weight vectors (all floating parameters) and the
    test error at ``points`` evenly spaced points of the linear path between them.
    """
    if len(seeds) != 2 or seeds[0] == seeds[1]:
        raise ValueError(f"stability needs two different seeds, got {seeds!r}")
    if not isinstance(points, int) or points < 2:
        raise ValueError(f"points must be an integer >= 2, got {points!r}")
    hp = dict(epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer)
    with executor_for(client) as ex:
        m, d = ex.put(model), ex.put(train_data)
        handles = [ex.submit(_train, m, start_state, masks, d, {**hp, "seed": int(s)}) for s in seeds]
        results = dict(ex.next_done() for _ in handles)
    a, b = results[handles[0]], results[handles[1]]
    names = [n for n, _ in model.named_parameters()]
    dist = torch.sqrt(sum(((a[n] - b[n]).double() ** 2).sum() for n in names)).item()
    rows = []
    for alpha in torch.linspace(0, 1, points).tolist():
        acc, loss = evaluate_state(model, interpolate(a, b, alpha), eval_data)
        rows.append({"alpha": alpha, "error": 1.0 - acc, "loss": loss})
    path = pd.DataFrame(rows)
    barrier = float(path["error"].max() - 0.5 * (path["error"].iloc[0] + path["error"].iloc[-1]))
    return StabilityResult(l2_distance=dist, path=path, instability=barrier)


def _train(model: nn.Module, start: State, masks: Masks, data: Data, hp: dict) -> State:
    """One training task (module-level so Dask can pickle it)."""
    return train_masked(model, start, masks, data, **hp)
