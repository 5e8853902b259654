"""How much two masks agree: Jaccard overlap per layer against the overlap of random masks.

Two independent random masks of densities d_a and d_b share a weight with probability d_a d_b
and cover it with probability d_a + d_b - d_a d_b, so their expected Jaccard index is about
d_a d_b / (d_a + d_b - d_a d_b) (exactly the ratio of the expected intersection to the expected
union). Lottery Jackpots (Zhang et al.) compare searched masks with magnitude masks this way.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

Masks = dict[str, torch.Tensor]

OVERLAP_COLUMNS = ["layer", "numel", "density_a", "density_b", "intersection", "union", "jaccard", "random_jaccard"]


def random_jaccard(density_a: float, density_b: float) -> float:
    """Expected Jaccard of two independent random masks: d_a d_b / (d_a + d_b - d_a d_b) (1 if both empty)."""
    union = density_a + density_b - density_a * density_b
    return 1.0 if union == 0 else density_a * density_b / union


def _check_pair(a: Masks, b: Masks) -> None:
    if set(a) != set(b):
        raise ValueError(f"masks name different tensors: {sorted(set(a) ^ set(b))}")
    for n in a:
        if a[n].shape != b[n].shape:
            raise ValueError(f"mask {n!r} has shape {tuple(a[n].shape)} in one and {tuple(b[n].shape)} in the other")


def mask_overlap(a: Masks, b: Masks) -> pd.DataFrame:
    """Per layer and ``'overall'``: densities, kept-weight intersection/union, Jaccard and its random expectation.

    The overall random expectation is the sum of the layers' expected intersections over the
    sum of their expected unions (random masks at each layer's densities).
    """
    _check_pair(a, b)
    rows = []
    tot = dict(numel=0, ka=0, kb=0, inter=0, union=0, e_inter=0.0, e_union=0.0)
    for n in a:
        ma, mb = a[n].bool(), b[n].bool()
        numel, ka, kb = ma.numel(), int(ma.sum()), int(mb.sum())
        inter, union = int((ma & mb).sum()), int((ma | mb).sum())
        da, db = ka / numel, kb / numel
        rows.append({"layer": n, "numel": numel, "density_a": da, "density_b": db, "intersection": inter,
                     "union": union, "jaccard": inter / union if union else 1.0,
                     "random_jaccard": random_jaccard(da, db)})
        for key, val in (("numel", numel), ("ka", ka), ("kb", kb), ("inter", inter), ("union", union),
                         ("e_inter", numel * da * db), ("e_union", numel * (da + db - da * db))):
            tot[key] += val
    rows.append({
        "layer": "overall", "numel": tot["numel"], "density_a": tot["ka"] / tot["numel"],
        "density_b": tot["kb"] / tot["numel"], "intersection": tot["inter"], "union": tot["union"],
        "jaccard": tot["inter"] / tot["union"] if tot["union"] else 1.0,
        "random_jaccard": tot["e_inter"] / tot["e_union"] if tot["e_union"] else 1.0,
    })
    return pd.DataFrame(rows, columns=OVERLAP_COLUMNS)


def overlap_table(masks: dict[str, Masks], layer: str = "overall") -> pd.DataFrame:
    """Tidy pairwise table (a, b, jaccard, random_jaccard, density_a, density_b) for one layer or overall."""
    labels = list(masks)
    rows = []
    for la in labels:
        for lb in labels:
            df = mask_overlap(masks[la], masks[lb]).set_index("layer")
            if layer not in df.index:
                raise ValueError(f"unknown layer {layer!r}; known: {', '.join(df.index)}")
            r = df.loc[layer]
            rows.append({"a": la, "b": lb, "jaccard": r["jaccard"], "random_jaccard": r["random_jaccard"],
                         "density_a": r["density_a"], "density_b": r["density_b"]})
    return pd.DataFrame(rows, columns=["a", "b", "jaccard", "random_jaccard", "density_a", "density_b"])


def overlap_matrix(masks: dict[str, Masks], layer: str = "overall") -> pd.DataFrame:
    """Square table of Jaccard overlaps between every pair of labelled masks (a heatmap's data)."""
    if not masks:
        raise ValueError("overlap_matrix needs at least one labelled set of masks")
    table = overlap_table(masks, layer)
    labels = list(masks)
    return table.pivot(index="a", columns="b", values="jaccard").loc[labels, labels]


def mask_overlay(a: Masks, b: Masks, layer: str) -> np.ndarray:
    """One layer's weights as a 2-D int8 map: 0 kept by neither, 1 by A only, 2 by B only, 3 by both.

    Weights of more than two dimensions are shown as (out, rest) like a conv's (out, in * k * k).
    """
    _check_pair(a, b)
    if layer not in a:
        raise ValueError(f"unknown layer {layer!r}; known: {', '.join(a)}")
    ma, mb = a[layer].bool(), b[layer].bool()
    code = ma.to(torch.int8) + 2 * mb.to(torch.int8)
    if code.dim() == 1:
        code = code.reshape(1, -1)
    return code.reshape(code.shape[0], -1).numpy()
