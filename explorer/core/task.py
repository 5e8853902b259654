"""What 'accuracy' and 'loss' mean for a model: the task, and metrics with their uncertainty."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


def top1_correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample 1.0 where the arg-max class equals the label, else 0.0."""
    return (logits.argmax(1) == labels).double()


def mean_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits.float(), labels)


@dataclass(frozen=True)
class Task:
    """How outputs are scored: ``metric_fn(outputs, labels)`` gives one value per sample (its mean is
    the metric shown, e.g. top-1 accuracy); ``loss_fn(outputs, labels)`` the mean loss.

    ``binary`` says the metric is 0/1 per sample (accuracy), which chooses the interval formula.
    ``higher_is_better`` orders sensitivity views.
    """

    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = mean_cross_entropy
    metric_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = top1_correct
    loss_name: str = "cross-entropy"
    metric_name: str = "accuracy"
    binary: bool = True
    higher_is_better: bool = True
    classification: bool = True

    @classmethod
    def custom(cls, loss_fn=None, metric_fn=None, *, loss_name: str | None = None,
               metric_name: str | None = None, binary: bool = False) -> "Task":
        """A task from a user's functions, shown by their names (``loss_name``/``metric_name`` or ``__name__``)."""
        base = cls()
        return cls(
            loss_fn=loss_fn or base.loss_fn,
            metric_fn=metric_fn or base.metric_fn,
            loss_name=loss_name or (getattr(loss_fn, "__name__", "loss") if loss_fn else base.loss_name),
            metric_name=metric_name or (getattr(metric_fn, "__name__", "metric") if metric_fn else base.metric_name),
            binary=binary if metric_fn else True,
            classification=metric_fn is None,
        )

    def per_sample(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        values = torch.as_tensor(self.metric_fn(outputs, labels)).double().reshape(-1)
        if values.numel() != len(labels):
            raise ValueError(f"metric_fn must return one value per sample ({len(labels)}), got {values.numel()}")
        return values

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> float:
        return float(self.loss_fn(outputs, labels))


def stratified_order(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """A permutation of the samples whose every prefix is (close to) proportionally stratified by label.

    Samples of each class are shuffled (seeded) and interleaved by their rank within the class
    relative to the class size, so the first n hold each class in proportion to its share.
    """
    gen = torch.Generator().manual_seed(seed)
    keys = torch.empty(len(labels), dtype=torch.float64)
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        perm = idx[torch.randperm(len(idx), generator=gen)]
        # rank r of a class of size k sits at (r + u) / k, u a random offset in [0, 1)
        offset = torch.rand(1, generator=gen, dtype=torch.float64)
        keys[perm] = (torch.arange(len(perm), dtype=torch.float64) + offset) / len(perm)
    return torch.argsort(keys, stable=True)


def mean_interval(values: torch.Tensor, population: int, binary: bool, z: float = 1.959964) -> tuple[float, float]:
    """95% interval for the population mean from a simple random sample ``values`` of ``population``.

    Binary metrics use the Agresti-Coull interval, others the normal one; both with the finite
    population correction, so a sample of the whole population gives a zero-width interval.
    """
    n = values.numel()
    fpc = math.sqrt(max(0.0, (population - n) / max(population - 1, 1)))
    if n >= population:
        m = float(values.mean())
        return m, m
    if binary:
        x = float(values.sum())
        n_t = n + z * z
        p_t = (x + z * z / 2) / n_t
        half = z * math.sqrt(p_t * (1 - p_t) / n_t) * fpc
        return max(0.0, p_t - half), min(1.0, p_t + half)
    m = float(values.mean())
    sd = float(values.std(unbiased=True)) if n > 1 else float("inf")
    half = z * sd / math.sqrt(n) * fpc
    return m - half, m + half
