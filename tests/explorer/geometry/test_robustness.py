"""Robustness geometry (angle, norm, margin) against an independent per-sample computation."""

from __future__ import annotations

import math
import threading

import numpy as np
import pandas as pd
import pytest
import torch

from prunescope.explorer.core.jobs import Cancelled
from prunescope.explorer.geometry import (
    compare_geometry, corrupt, features, flips, fragile_samples, geometry_sweep, robust_samples, robustness_geometry,
)


def reference_row(f: np.ndarray, z: np.ndarray, y: int, w: np.ndarray) -> tuple:
    norm = math.sqrt(sum(v * v for v in f))
    wy = w[y]
    cos = sum(a * b for a, b in zip(f, wy)) / (norm * math.sqrt(sum(v * v for v in wy)))
    angle = math.degrees(math.acos(max(-1.0, min(1.0, cos))))
    margin = z[y] - max(v for c, v in enumerate(z) if c != y)
    return angle, norm, margin, int(np.argmax(z)) == y


def test_geometry_matches_independent_computation(mlp, digits, pruned_params):
    x, y = digits
    for params in ({}, pruned_params):
        feats = features(mlp, params, x)
        w = params.get("fc3.weight", mlp.fc3.weight).detach()
        logits = feats @ w.T + mlp.fc3.bias.detach()
        geo = robustness_geometry(feats, logits, y, w)
        assert list(geo["sample"]) == list(range(len(x)))
        for i in range(0, len(x), 23):
            angle, norm, margin, correct = reference_row(
                feats[i].double().numpy(), logits[i].double().numpy(), int(y[i]), w.double().numpy())
            row = geo.iloc[i]
            assert row["angle"] == pytest.approx(angle, abs=1e-6)
            assert row["norm"] == pytest.approx(norm, rel=1e-9)
            assert row["margin"] == pytest.approx(margin, rel=1e-6, abs=1e-6)
            assert bool(row["correct"]) == correct
        assert ((geo["margin"] > 0) == geo["correct"]).all()


def test_zero_features_give_nan_angle_and_shape_errors():
    geo = robustness_geometry(torch.zeros(2, 3), torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
                              torch.tensor([0, 0]), torch.ones(2, 3))
    assert geo["angle"].isna().all() and list(geo["correct"]) == [True, False]
    with pytest.raises(ValueError, match="class_weights must be"):
        robustness_geometry(torch.zeros(2, 3), torch.zeros(2, 2), torch.tensor([0, 1]), torch.ones(2, 4))
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        robustness_geometry(torch.zeros(2, 3), torch.zeros(2, 2), torch.tensor([0, 2]), torch.ones(2, 3))


def test_sweep_and_comparison(mlp, digits, pruned_params):
    x, y = digits[0][:120], digits[1][:120]
    settings = {"dense": {}, "random 60%": pruned_params}
    summary, per_sample = geometry_sweep(mlp, settings, x, y, corruptions=("gaussian_noise", "occlusion"),
                                         severities=(1, 5), seed=3, image_shape=(1, 8, 8))
    assert len(summary) == 2 * 5 and len(per_sample) == 2 * 5 * 120
    clean_dense = summary.query("setting == 'dense' and corruption == 'clean'").iloc[0]
    assert clean_dense["accuracy"] == pytest.approx((mlp(x).argmax(1) == y).float().mean().item())
    noisy = per_sample.query("setting == 'random 60%' and corruption == 'gaussian_noise' and severity == 5")
    xc = corrupt(x, "gaussian_noise", 5, 3, (1, 8, 8))
    logits = torch.func.functional_call(mlp, pruned_params, (xc,)).detach()
    expected = robustness_geometry(features(mlp, pruned_params, xc), logits, y, pruned_params["fc3.weight"])
    np.testing.assert_allclose(noisy["margin"].values, expected["margin"].values, rtol=1e-6)
    # the summary is the mean of the per-sample table
    means = per_sample.groupby(["setting", "corruption", "severity"])[["correct", "margin"]].mean()
    for row in summary.itertuples():
        assert row.accuracy == pytest.approx(means.loc[(row.setting, row.corruption, row.severity), "correct"])
        assert row.mean_margin == pytest.approx(means.loc[(row.setting, row.corruption, row.severity), "margin"])
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled, match="after 0 of"):
        geometry_sweep(mlp, settings, x, y, cancel=stop, image_shape=(1, 8, 8))
    too_many = {f"s{i}": {} for i in range(5)}
    with pytest.raises(ValueError, match="compare 1 to 4 settings, got 5"):
        geometry_sweep(mlp, too_many, x, y)
    with pytest.raises(ValueError, match="compare 1 to 4 settings, got 0"):
        compare_geometry({}, y, {})


def _geo(correct, margin) -> pd.DataFrame:
    n = len(correct)
    return pd.DataFrame({"sample": range(n), "label": [0] * n, "pred": [0] * n, "correct": correct,
                         "angle": [0.0] * n, "norm": [1.0] * n, "margin": margin})


def test_fragile_and_robust_rankings():
    dense = _geo([True, True, True, False, True], [5.0, 2.0, 4.0, -1.0, 3.0])
    pruned = _geo([True, False, True, True, False], [1.0, -0.5, 4.5, 0.5, -4.0])
    fragile = fragile_samples(dense, pruned, k=4)
    # became wrong first (4: drop 7, 1: drop 2.5), then the largest drops (0: 4, 2: -0.5)
    assert list(fragile["sample"]) == [4, 1, 0, 2]
    assert list(fragile["flip"]) == ["became_wrong", "became_wrong", "stayed_correct", "stayed_correct"]
    robust = robust_samples(dense, pruned, k=5)
    assert list(robust["sample"]) == [2, 0]  # correct in both, smallest drop first
    assert flips(dense, pruned).set_index("sample").loc[3, "flip"] == "became_right"
    with pytest.raises(ValueError, match="same samples"):
        fragile_samples(dense, pruned.iloc[:3], k=2)
