"""Robustness geometry of the feature layer per sample (Chen et al. 2022, *Understanding Robustness
Lottery*): the angle between a sample's feature vector and its true class's weight vector of the
final linear layer, the feature norm, the logit margin and correctness; on clean and corrupted
inputs; for several settings side by side; and rankings of the samples pruning breaks.
"""

from __future__ import annotations

import threading
from typing import Callable, ContextManager, Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from prunescope.explorer.core.jobs import Cancelled
from prunescope.explorer.geometry.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from prunescope.explorer.geometry.features import capture, classifier_weight, default_layer

GEOMETRY_COLUMNS = ["sample", "label", "pred", "correct", "angle", "norm", "margin"]
SUMMARY_COLUMNS = ["setting", "corruption", "severity", "accuracy", "mean_angle", "mean_norm", "mean_margin", "samples"]
#: At most this many settings are compared side by side.
MAX_SETTINGS = 4
#: A run: (corruption, severity) -> (features, logits); ("clean", 0) for the clean inputs.
Runs = Mapping[tuple[str, int], tuple[torch.Tensor, torch.Tensor]]


def robustness_geometry(
    features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor
) -> pd.DataFrame:
    """Per-sample geometry: ``sample, label, pred, correct, angle, norm, margin``.

    ``angle`` is in degrees between ``features[i]`` and ``class_weights[labels[i]]`` (NaN when
    either is zero); ``norm`` is ``||features[i]||_2``; ``margin`` is the true logit minus the
    largest other logit (> 0 iff correct, barring ties). Computed in float64.
    """
    f = torch.as_tensor(features).detach().to(torch.float64).reshape(len(features), -1)
    z = torch.as_tensor(logits).detach().to(torch.float64)
    y = torch.as_tensor(labels).detach().long()
    w = torch.as_tensor(class_weights).detach().to(torch.float64)
    n = len(y)
    if f.shape[0] != n or z.shape[0] != n:
        raise ValueError(f"features ({f.shape[0]}), logits ({z.shape[0]}) and labels ({n}) must have the same samples")
    if w.ndim != 2 or w.shape[1] != f.shape[1] or z.ndim != 2 or w.shape[0] != z.shape[1]:
        raise ValueError(
            f"class_weights must be (classes={z.shape[-1]}, dims={f.shape[1]}), got {tuple(w.shape)}"
        )
    if n and (y.min() < 0 or y.max() >= z.shape[1]):
        raise ValueError(f"labels must lie in 0..{z.shape[1] - 1}, got {int(y.min())}..{int(y.max())}")
    true_w = w[y]  # (n, dims)
    norm = f.norm(dim=1)
    cosine = (f * true_w).sum(1) / (norm * true_w.norm(dim=1))
    angle = torch.rad2deg(torch.arccos(cosine.clamp(-1.0, 1.0)))
    true_logit = z.gather(1, y[:, None]).squeeze(1)
    others = z.scatter(1, y[:, None], float("-inf"))
    pred = z.argmax(1)
    return pd.DataFrame({
        "sample": torch.arange(n).numpy(), "label": y.numpy(), "pred": pred.numpy(),
        "correct": (pred == y).numpy(), "angle": angle.numpy(), "norm": norm.numpy(),
        "margin": (true_logit - others.max(1).values).numpy(),
    }, columns=GEOMETRY_COLUMNS)


def _summary_row(setting: str, corruption: str, severity: int, geo: pd.DataFrame) -> dict:
    return {"setting": setting, "corruption": corruption, "severity": severity,
            "accuracy": float(geo["correct"].mean()), "mean_angle": float(geo["angle"].mean()),
            "mean_norm": float(geo["norm"].mean()), "mean_margin": float(geo["margin"].mean()),
            "samples": len(geo)}


def compare_geometry(
    runs: Mapping[str, Runs], labels: torch.Tensor, class_weights: Mapping[str, torch.Tensor]
) -> pd.DataFrame:
    """Side-by-side summary of up to 4 settings: one row per (setting, corruption, severity) with
    accuracy, mean angle (degrees), mean norm and mean margin (the paper's comparison table).

    ``runs[setting][(corruption, severity)] = (features, logits)``; ``class_weights[setting]`` is
    that setting's (pruned) final-layer weight. NaN angles (zero features) are left out of means.
    """
    if not 1 <= len(runs) <= MAX_SETTINGS:
        raise ValueError(f"compare 1 to {MAX_SETTINGS} settings, got {len(runs)}")
    missing = [s for s in runs if s not in class_weights]
    if missing:
        raise ValueError(f"class_weights lacks setting(s) {missing}")
    rows = []
    for setting, by_corruption in runs.items():
        for (corruption, severity), (feats, logits) in by_corruption.items():
            geo = robustness_geometry(feats, logits, labels, class_weights[setting])
            rows.append(_summary_row(str(setting), corruption, int(severity), geo))
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def geometry_sweep(
    model: nn.Module,
    params_by_setting: Mapping[str, dict[str, torch.Tensor]],
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    image_shape: Sequence[int] | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    layer: str | None = None,
    interventions: Mapping[str, Callable[[], ContextManager]] | None = None,
    batch_size: int = 1024,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run every setting on the clean and every corrupted copy of ``inputs``.

    Returns ``(summary, per_sample)``: the :func:`compare_geometry` table, and the per-sample
    geometry with ``setting, corruption, severity`` columns in front. Each corrupted copy is made
    once (seeded) and shared by all settings. ``progress(done, total)`` after each forward;
    setting ``cancel`` raises :class:`~prunescope.explorer.core.jobs.Cancelled` before the next one.
    """
    if not 1 <= len(params_by_setting) <= MAX_SETTINGS:
        raise ValueError(f"compare 1 to {MAX_SETTINGS} settings, got {len(params_by_setting)}")
    spec = default_layer(model, inputs) if layer is None else layer
    interventions = interventions or {}
    conditions = [("clean", 0)] + [(c, int(s)) for c in corruptions for s in severities]
    total, done = len(conditions) * len(params_by_setting), 0
    runs: dict[str, dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]]] = {s: {} for s in params_by_setting}
    for corruption, severity in conditions:
        data = inputs if corruption == "clean" else corrupt(inputs, corruption, severity, seed, image_shape, value_range)
        for setting, params in params_by_setting.items():
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"geometry sweep cancelled after {done} of {total} forwards")
            result = capture(model, params, data, [spec], intervention=interventions.get(setting), batch_size=batch_size)
            runs[setting][(corruption, severity)] = (result.features[spec], result.logits)
            done += 1
            if progress is not None:
                progress(done, total)
    weights = {s: classifier_weight(model, p, spec) for s, p in params_by_setting.items()}
    frames = []
    for setting, by_condition in runs.items():
        for (corruption, severity), (feats, logits) in by_condition.items():
            geo = robustness_geometry(feats, logits, labels, weights[setting])
            geo.insert(0, "severity", severity)
            geo.insert(0, "corruption", corruption)
            geo.insert(0, "setting", str(setting))
            frames.append(geo)
    return compare_geometry(runs, labels, weights), pd.concat(frames, ignore_index=True)


def _joined(dense_geo: pd.DataFrame, pruned_geo: pd.DataFrame) -> pd.DataFrame:
    if len(dense_geo) != len(pruned_geo) or not (dense_geo["sample"].values == pruned_geo["sample"].values).all():
        raise ValueError("dense_geo and pruned_geo must describe the same samples in the same order")
    joined = dense_geo[["sample", "label"]].copy()
    for col in ("pred", "correct", "angle", "norm", "margin"):
        joined[f"dense_{col}"] = dense_geo[col].values
        joined[f"pruned_{col}"] = pruned_geo[col].values
    joined["margin_drop"] = joined["dense_margin"] - joined["pruned_margin"]
    joined["flip"] = "same"
    joined.loc[joined["dense_correct"] & ~joined["pruned_correct"], "flip"] = "became_wrong"
    joined.loc[~joined["dense_correct"] & joined["pruned_correct"], "flip"] = "became_right"
    joined.loc[joined["dense_correct"] & joined["pruned_correct"], "flip"] = "stayed_correct"
    joined.loc[~joined["dense_correct"] & ~joined["pruned_correct"], "flip"] = "stayed_wrong"
    return joined


def flips(dense_geo: pd.DataFrame, pruned_geo: pd.DataFrame) -> pd.DataFrame:
    """Dense and pruned geometry side by side per sample, with ``margin_drop`` (dense minus
    pruned margin) and ``flip``: stayed_correct, became_wrong, became_right or stayed_wrong."""
    return _joined(dense_geo, pruned_geo)


def fragile_samples(dense_geo: pd.DataFrame, pruned_geo: pd.DataFrame, k: int = 16) -> pd.DataFrame:
    """The ``k`` samples most fragile to pruning: those correct dense and wrong pruned first, then
    the rest; within each group the largest margin drop first."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    joined = _joined(dense_geo, pruned_geo)
    joined["_broken"] = joined["flip"] == "became_wrong"
    ranked = joined.sort_values(["_broken", "margin_drop", "sample"], ascending=[False, False, True], kind="stable")
    return ranked.drop(columns="_broken").head(k).reset_index(drop=True)


def robust_samples(dense_geo: pd.DataFrame, pruned_geo: pd.DataFrame, k: int = 16) -> pd.DataFrame:
    """The ``k`` samples most robust to pruning: correct in both, smallest margin drop first
    (a negative drop: pruning widened the margin)."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    joined = _joined(dense_geo, pruned_geo)
    kept = joined[joined["flip"] == "stayed_correct"]
    return kept.sort_values(["margin_drop", "sample"], kind="stable").head(k).reset_index(drop=True)

