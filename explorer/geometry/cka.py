"""Linear centred kernel alignment between representations (Kornblith et al. 2019).

``linear_cka(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with linear kernels ``K = X X^T``,
``L = Y Y^T``. The biased estimator centres the kernels; the debiased one uses the unbiased HSIC
estimator of Song et al. 2012, as recommended for CKA by Nguyen, Raghu & Kornblith 2021. Both are
computed in float64 in feature space where that is cheaper, so memory stays ``O(n d)`` (plus a
``dx x dy`` cross product, or ``n x n`` Gram matrices when those are smaller).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import pandas as pd
import torch


@dataclass
class _Rep:
    """A representation prepared for HSIC: centred float64 rows and the terms reused per pair."""

    x: torch.Tensor  # (n, d) centred, float64
    sq: torch.Tensor  # (n,) squared row norms = diag(K)
    colsum: torch.Tensor  # (d,) X^T 1 (zero up to rounding after centring)

    @classmethod
    def of(cls, features: torch.Tensor) -> "_Rep":
        x = torch.as_tensor(features).detach().to("cpu", torch.float64)
        x = x.reshape(x.shape[0], -1)
        x = x - x.mean(0, keepdim=True)
        return cls(x=x, sq=(x * x).sum(1), colsum=x.sum(0))


def _frobenius_kl(a: _Rep, b: _Rep) -> torch.Tensor:
    """``<K, L>_F = ||X^T Y||_F^2`` by the cheaper of the feature-space and Gram-space products."""
    n, da, db = a.x.shape[0], a.x.shape[1], b.x.shape[1]
    if da * db <= n * n:
        return (a.x.T @ b.x).square().sum()
    return ((a.x @ a.x.T) * (b.x @ b.x.T)).sum()


def _hsic(a: _Rep, b: _Rep, debiased: bool) -> float:
    """HSIC of two prepared representations, up to a factor common to all pairs of one ``n``."""
    n = a.x.shape[0]
    kl = _frobenius_kl(a, b)
    if not debiased:  # tr(K H L H), the kernels centred by centring X and Y
        return float(kl)
    # Song et al. 2012, eq. (5): K~ = K with zero diagonal.
    trace = kl - (a.sq * b.sq).sum()
    k_sum = a.colsum.square().sum() - a.sq.sum()  # 1^T K~ 1
    l_sum = b.colsum.square().sum() - b.sq.sum()
    k_row = a.x @ a.colsum - a.sq  # K~ 1
    l_row = b.x @ b.colsum - b.sq
    value = trace + k_sum * l_sum / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (k_row @ l_row)
    return float(value / (n * (n - 3)))


def _check_pair(a: torch.Tensor, b: torch.Tensor, debiased: bool) -> int:
    n = a.shape[0]
    if b.shape[0] != n:
        raise ValueError(f"representations must have the same samples (rows), got {a.shape[0]} and {b.shape[0]}")
    minimum = 4 if debiased else 2
    if n < minimum:
        raise ValueError(f"{'debiased ' if debiased else ''}CKA needs at least {minimum} samples, got {n}")
    return n


def _cka(a: _Rep, b: _Rep, debiased: bool, self_a: float | None = None, self_b: float | None = None) -> float:
    xy = _hsic(a, b, debiased)
    xx = _hsic(a, a, debiased) if self_a is None else self_a
    yy = _hsic(b, b, debiased) if self_b is None else self_b
    denominator = xx * yy
    if not denominator > 0:  # a constant representation (or a negative unbiased estimate)
        return math.nan
    return xy / math.sqrt(denominator)


def linear_cka(a: torch.Tensor, b: torch.Tensor, debiased: bool = False) -> float:
    """Linear CKA of two representations ``(samples, dims_a)`` and ``(samples, dims_b)``.

    1 for identical representations; invariant to orthogonal transforms and isotropic scaling of
    either. ``debiased=True`` uses the unbiased HSIC estimator (Song et al. 2012; Nguyen et al.
    2021), needs at least 4 samples and can be slightly negative. NaN when a representation is
    constant (CKA undefined). Computed in float64.
    """
    _check_pair(a, b, debiased)
    return _cka(_Rep.of(a), _Rep.of(b), debiased)


def cka_by_layer(
    dense_feats: Mapping[str, torch.Tensor], pruned_feats: Mapping[str, torch.Tensor], debiased: bool = False
) -> pd.DataFrame:
    """CKA between the dense and the pruned activations of each layer, in ``dense_feats`` order.

    Returns columns ``layer``, ``cka``, ``dims``. Both mappings must have the same layers.
    """
    if set(dense_feats) != set(pruned_feats):
        raise ValueError(f"layers differ: dense has {sorted(dense_feats)}, pruned has {sorted(pruned_feats)}")
    rows = []
    for layer, dense in dense_feats.items():
        pruned = pruned_feats[layer]
        _check_pair(dense, pruned, debiased)
        rows.append({"layer": layer, "cka": _cka(_Rep.of(dense), _Rep.of(pruned), debiased),
                     "dims": int(dense[0].numel()) if len(dense) else 0})
    return pd.DataFrame(rows, columns=["layer", "cka", "dims"])


def cka_matrix(
    feats_a: Mapping[str, torch.Tensor], feats_b: Mapping[str, torch.Tensor] | None = None, debiased: bool = False
) -> pd.DataFrame:
    """Layer-by-layer CKA: rows are the layers of ``feats_a``, columns those of ``feats_b``
    (``feats_a`` itself when omitted). Each representation's self-term is computed once."""
    feats_b = feats_a if feats_b is None else feats_b
    reps_a = {k: _Rep.of(v) for k, v in feats_a.items()}
    reps_b = reps_a if feats_b is feats_a else {k: _Rep.of(v) for k, v in feats_b.items()}
    for ra in reps_a.values():
        for rb in reps_b.values():
            _check_pair(ra.x, rb.x, debiased)
    self_a = {k: _hsic(r, r, debiased) for k, r in reps_a.items()}
    self_b = self_a if reps_b is reps_a else {k: _hsic(r, r, debiased) for k, r in reps_b.items()}
    values = [[_cka(reps_a[i], reps_b[j], debiased, self_a[i], self_b[j]) for j in reps_b] for i in reps_a]
    frame = pd.DataFrame(values, index=list(reps_a), columns=list(reps_b), dtype=float)
    frame.index.name, frame.columns.name = "layer_a", "layer_b"
    return frame
