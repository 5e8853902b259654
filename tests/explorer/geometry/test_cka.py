"""linear_cka against independent numpy computations (centring matrices; the HSIC U-statistic)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from prunescope.explorer.geometry import cka_by_layer, cka_matrix, linear_cka


def reference_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. 2019, eq. (3)-(4): HSIC = tr(K H L H) / (n-1)^2 with H = I - 11^T/n."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h) / (n - 1) ** 2

    return hsic(k, l) / math.sqrt(hsic(k, k) * hsic(l, l))


def reference_debiased_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA from the HSIC U-statistic (Song et al. 2012): the mean over distinct ordered
    (i, j, q, r) of k_ij l_ij + k_ij l_qr - 2 k_ij l_iq, on the raw (uncentred) linear kernels."""
    n = len(x)
    idx = np.array(list(itertools.permutations(range(n), 4)))
    i, j, q, r = idx.T

    def hsic(k, l):
        return np.mean(k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q])

    k, l = x @ x.T, y @ y.T
    return hsic(k, l) / math.sqrt(hsic(k, k) * hsic(l, l))


@pytest.fixture
def xy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 12)) + 2.0
    y = np.tanh(x @ rng.normal(size=(12, 7))) + 0.3 * rng.normal(size=(40, 7))
    return x, y


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_with_itself_is_one(xy, debiased, mlp, digits):
    x, _ = xy
    assert linear_cka(torch.tensor(x), torch.tensor(x), debiased) == pytest.approx(1.0, abs=1e-12)
    feats = torch.relu(mlp.fc1(digits[0])).detach()
    assert linear_cka(feats, feats, debiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_invariant_to_orthogonal_transform_and_isotropic_scaling(xy, debiased):
    x, y = xy
    base = linear_cka(torch.tensor(x), torch.tensor(y), debiased)
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(12, 12)))
    assert linear_cka(torch.tensor(x @ q), torch.tensor(y), debiased) == pytest.approx(base, abs=1e-12)
    assert linear_cka(torch.tensor(3.7 * x), torch.tensor(0.01 * y), debiased) == pytest.approx(base, abs=1e-12)
    # but not to an anisotropic scaling: the check above can fail
    skew = np.diag(np.geomspace(0.01, 100, 12))
    assert abs(linear_cka(torch.tensor(x @ skew), torch.tensor(y), debiased) - base) > 1e-3


def test_cka_matches_centring_matrix_formula(xy):
    x, y = xy
    assert linear_cka(torch.tensor(x), torch.tensor(y)) == pytest.approx(reference_cka(x, y), rel=1e-10)
    # more dims than samples takes the Gram-matrix route inside
    rng = np.random.default_rng(2)
    wide_x, wide_y = rng.normal(size=(9, 50)), rng.normal(size=(9, 40))
    assert linear_cka(torch.tensor(wide_x), torch.tensor(wide_y)) == pytest.approx(reference_cka(wide_x, wide_y), rel=1e-10)
    # float32 inputs are promoted to float64 inside
    assert linear_cka(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)) == pytest.approx(
        reference_cka(x.astype(np.float32).astype(np.float64), y.astype(np.float32).astype(np.float64)), rel=1e-9)


def test_debiased_cka_matches_u_statistic():
    rng = np.random.default_rng(3)
    for n, dx, dy in [(7, 3, 5), (8, 20, 30)]:  # both the feature-space and the Gram route
        x = rng.normal(size=(n, dx)) + 1.5
        y = x @ rng.normal(size=(dx, dy)) + rng.normal(size=(n, dy))
        assert linear_cka(torch.tensor(x), torch.tensor(y), debiased=True) == pytest.approx(
            reference_debiased_cka(x, y), rel=1e-9)


def test_cka_by_layer_and_matrix_agree_with_linear_cka(mlp, digits, pruned_params):
    from prunescope.explorer.geometry import capture

    x, _ = digits
    layers = ["fc1", "fc2", "fc3"]
    dense = capture(mlp, {}, x, layers).features
    pruned = capture(mlp, pruned_params, x, layers).features
    table = cka_by_layer(dense, pruned)
    assert list(table["layer"]) == layers
    for row in table.itertuples():
        assert row.cka == pytest.approx(linear_cka(dense[row.layer], pruned[row.layer]), abs=1e-12)
        assert row.cka < 1.0
    matrix = cka_matrix(dense)
    assert np.allclose(np.diag(matrix.values), 1.0)
    assert np.allclose(matrix.values, matrix.values.T)
    cross = cka_matrix(dense, pruned, debiased=True)
    assert cross.loc["fc1", "fc3"] == pytest.approx(linear_cka(dense["fc1"], pruned["fc3"], debiased=True), abs=1e-12)


def test_cka_bad_input():
    a = torch.randn(10, 3)
    with pytest.raises(ValueError, match="same samples"):
        linear_cka(a, torch.randn(9, 3))
    with pytest.raises(ValueError, match="at least 4 samples, got 3"):
        linear_cka(a[:3], a[:3], debiased=True)
    with pytest.raises(ValueError, match="layers differ"):
        cka_by_layer({"fc1": a}, {"fc2": a})
    assert math.isnan(linear_cka(torch.ones(10, 3), a))  # a constant representation
