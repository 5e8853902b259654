"""Mask overlaps against independent numpy computations and a Monte-Carlo estimate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prunescope.explorer.lottery.overlap import (
    mask_overlap, mask_overlay, overlap_matrix, overlap_table, random_jaccard,
)
from prunescope.explorer.lottery.prune import random_mask_like


def _masks(seed: int, densities=(0.3, 0.6)) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.rand((40, 50), generator=gen) < densities[0],
            "b.weight": torch.rand((7, 3, 3, 3), generator=gen) < densities[1]}


def test_jaccard_self_one_complement_zero():
    m = _masks(0)
    same = mask_overlap(m, m).set_index("layer")
    assert (same["jaccard"] == 1.0).all()
    comp = mask_overlap(m, {k: ~v for k, v in m.items()}).set_index("layer")
    assert (comp["jaccard"] == 0.0).all() and (comp["intersection"] == 0).all()


def test_jaccard_matches_numpy():
    a, b = _masks(1), _masks(2)
    df = mask_overlap(a, b).set_index("layer")
    inter = union = 0
    for n in a:
        x, y = a[n].numpy(), b[n].numpy()
        i, u = np.logical_and(x, y).sum(), np.logical_or(x, y).sum()
        inter, union = inter + i, union + u
        assert df.loc[n, "jaccard"] == pytest.approx(i / u)
        assert df.loc[n, "density_a"] == pytest.approx(x.mean())
    assert df.loc["overall", "jaccard"] == pytest.approx(inter / union)


def test_random_expectation_matches_monte_carlo():
    base = _masks(3, densities=(0.2, 0.7))
    other = _masks(4, densities=(0.5, 0.1))
    expected = mask_overlap(base, other).set_index("layer")["random_jaccard"]
    draws = [mask_overlap(random_mask_like(base, 2 * s), random_mask_like(other, 2 * s + 1)).set_index("layer")["jaccard"]
             for s in range(300)]
    mc = sum(draws) / len(draws)
    for layer in expected.index:
        assert mc[layer] == pytest.approx(expected[layer], rel=0.03)
    assert random_jaccard(0.5, 0.5) == pytest.approx(0.25 / 0.75)


def test_overlay_codes_and_matrix():
    a, b = _masks(5), _masks(6)
    over = mask_overlay(a, b, "b.weight")
    assert over.shape == (7, 27) and over.dtype == np.int8
    x, y = a["b.weight"].reshape(7, -1).numpy(), b["b.weight"].reshape(7, -1).numpy()
    assert ((over == 3) == (x & y)).all() and ((over == 1) == (x & ~y)).all()
    assert ((over == 2) == (~x & y)).all() and ((over == 0) == (~x & ~y)).all()
    mat = overlap_matrix({"A": a, "B": b, "C": a})
    assert list(mat.index) == ["A", "B", "C"] and np.allclose(np.diag(mat), 1.0)
    assert mat.loc["A", "B"] == pytest.approx(mat.loc["B", "A"]) and mat.loc["A", "C"] == 1.0
    table = overlap_table({"A": a, "B": b}, layer="a.weight")
    assert table.query("a == 'A' and b == 'B'")["jaccard"].item() == pytest.approx(
        mask_overlap(a, b).set_index("layer").loc["a.weight", "jaccard"])


def test_overlap_bad_inputs():
    a = _masks(7)
    with pytest.raises(ValueError, match="different tensors"):
        mask_overlap(a, {"a.weight": a["a.weight"]})
    with pytest.raises(ValueError, match="unknown layer"):
        mask_overlay(a, a, "nope")
