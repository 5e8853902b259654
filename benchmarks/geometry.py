"""Feature-space geometry: refresh latency after a slider release, UMAP fit times, placement.

    .venv/bin/python benchmarks/geometry.py [--releases 30] [--models digits_mlp ...]

For each sample model on its full test split:

* refresh: what a slider release recomputes for the Geometry tab (masks applied, one forward
  capturing the classifier's input and the logits, the pruned points placed in the dense UMAP
  frame, the per-sample robustness table), p50/p95 over global-magnitude sparsities 5%..95%;
* first UMAP fit in a fresh process (import, Numba JIT and fit), the same fit again in that
  process (JIT done), and the fit in a second fresh process that finds the disk cache;
* placement of pruned features: neighbour placement (inverse-distance weights over the k nearest
  dense points) against umap's ``transform``: time, the displacement of the dense points from
  their fitted positions and the agreement of the 10 nearest neighbours (feature space vs
  embedding), in units of the embedding's spread (RMS distance to its centroid).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import torch

from prunescope.explorer.core.forward import masked_params
from prunescope.explorer.geometry import (
    capture, classifier_weight, default_layer, fit_embedding, robustness_geometry,
)
from prunescope.sample_models import get_sample_model, list_sample_models


def magnitude_masks(model: torch.nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    """Global magnitude masks over every weight matrix or kernel (Han et al. 2015)."""
    weights = {n: p.detach() for n, p in model.named_parameters() if p.ndim >= 2}
    scores = torch.cat([w.abs().flatten() for w in weights.values()])
    k = int(round(sparsity * len(scores)))
    threshold = scores.kthvalue(k).values if k > 0 else scores.min() - 1
    return {n: w.abs() > threshold for n, w in weights.items()}


def refresh_times(name: str, releases: int) -> tuple[list[float], list[float]]:
    """Milliseconds per slider release for UMAP (neighbour placement) and PCA frames."""
    spec = get_sample_model(name)
    model, (x, y) = spec.load(), spec.data("test")
    dense = {n: p.detach() for n, p in model.named_parameters()}
    layer = default_layer(model, x)
    ref = capture(model, {}, x, [layer]).features[layer]
    frames = {"umap": fit_embedding(ref, n_epochs=200, cache=False), "pca": fit_embedding(ref, "pca")}
    times: dict[str, list[float]] = {"umap": [], "pca": []}
    for method, frame in frames.items():
        for sparsity in np.linspace(0.05, 0.95, releases):
            masks = magnitude_masks(model, float(sparsity))  # the pruning step itself is not timed
            start = time.perf_counter()
            params = masked_params(dense, masks)
            result = capture(model, params, x, [layer])
            frame.place(result.features[layer])
            robustness_geometry(result.features[layer], result.logits, y, classifier_weight(model, params, layer))
            times[method].append(1e3 * (time.perf_counter() - start))
    return times["umap"], times["pca"]


_CHILD = """
import json, sys, time
from prunescope.explorer.geometry import default_layer, features, fit_embedding
from prunescope.sample_models import get_sample_model
spec = get_sample_model({name!r})
model, (x, _) = spec.load(), spec.data("test")
feats = features(model, {{}}, x)
start = time.perf_counter()
emb = fit_embedding(feats, directory={directory!r})
first = time.perf_counter() - start
again = None
if not emb.cache_hit:
    start = time.perf_counter()
    fit_embedding(feats, cache=False)
    again = time.perf_counter() - start
print(json.dumps({{"hit": emb.cache_hit, "first": first, "again": again, "umap_imported": "umap" in sys.modules}}))
"""


def fresh_process_fit(name: str, directory: str, numba_cache: str) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": numba_cache}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(_CHILD.format(name=name, directory=directory))],
                         capture_output=True, text=True, check=True, env=env, timeout=900)
    return json.loads(out.stdout.strip().splitlines()[-1])


def knn_agreement(feats: np.ndarray, placed: np.ndarray, ref_feats: np.ndarray, ref_pos: np.ndarray,
                  k: int = 10) -> float:
    """Mean fraction of each point's k nearest reference points in feature space that are also
    among its k nearest reference positions in the embedding (1 = neighbourhoods kept)."""
    df = ((feats[:, None, :] - ref_feats[None]) ** 2).sum(-1)
    de = ((placed[:, None, :] - ref_pos[None]) ** 2).sum(-1)
    nf, ne = np.argsort(df, 1)[:, :k], np.argsort(de, 1)[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(nf, ne)]))


def placement_rows(name: str, repeats: int = 5) -> list[dict]:
    spec = get_sample_model(name)
    model, (x, _) = spec.load(), spec.data("test")
    dense = {n: p.detach() for n, p in model.named_parameters()}
    layer = default_layer(model, x)
    ref = capture(model, {}, x, [layer]).features[layer]
    emb = fit_embedding(ref, cache=False, keep_reducer=True)
    pos = emb.positions
    spread = float(np.sqrt(((pos - pos.mean(0)) ** 2).sum(1).mean()))
    # held-out check: fit on 80 %, place the other 20 % against the 80 % reference
    order = np.random.default_rng(0).permutation(len(ref))
    fit_idx, held_idx = np.sort(order[: int(0.8 * len(ref))]), np.sort(order[int(0.8 * len(ref)):])
    part = fit_embedding(ref[fit_idx], cache=False, keep_reducer=True)
    rows = []
    for label, feats, frame in [
        ("dense (own points)", ref, emb),
        ("held-out 20 % dense", ref[held_idx], part),
        *[(f"magnitude {int(100 * s)} %", capture(model, masked_params(dense, magnitude_masks(model, s)), x,
                                                  [layer]).features[layer], emb) for s in (0.5, 0.9)],
    ]:
        placed, ms = {}, {}
        for method, kwargs in [("neighbors k=5", {"placement": "neighbors", "k": 5}),
                               ("neighbors k=15", {"placement": "neighbors", "k": 15}),
                               ("umap transform", {"placement": "transform"})]:
            frame.place(feats, **kwargs)  # warm (umap's transform compiles on first use)
            start = time.perf_counter()
            for _ in range(repeats):
                placed[method] = frame.place(feats, **kwargs)
            ms[method] = 1e3 * (time.perf_counter() - start) / repeats
        for method, p in placed.items():
            row = {"model": name, "features": label, "placement": method, "ms": ms[method],
                   "knn": knn_agreement(feats.numpy(), p, frame.reference.numpy(), frame.positions)}
            if frame is emb and label.startswith("dense"):
                row["displacement"] = float(np.linalg.norm(p - pos, axis=1).mean()) / spread
            else:
                other = placed["umap transform"] if method != "umap transform" else placed["neighbors k=5"]
                row["displacement"] = float(np.linalg.norm(p - other, axis=1).mean()) / spread
            rows.append(row)
    return rows


def _ms(times: list[float]) -> str:
    return f"{min(times):.1f} / {np.percentile(times, 50):.1f} / {np.percentile(times, 95):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--releases", type=int, default=30)
    parser.add_argument("--models", nargs="*", default=list_sample_models())
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| model | test samples | feature dims | refresh min / p50 / p95 ms (UMAP frame) "
          "| refresh min / p50 / p95 ms (PCA) "
          "| first fit incl. JIT s (fresh process, empty Numba cache) | fit again in that process s "
          "| fit with warm disk cache s (fresh process) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    models = []
    for name in args.models:
        spec = get_sample_model(name)
        try:
            model, (x, _) = spec.load(), spec.data("test")
        except FileNotFoundError as missing:
            print(f"| {name} | skipped: {missing} |")
            continue
        models.append(name)
        dims = capture(model, {}, x[:1], [default_layer(model, x)]).features[default_layer(model, x)].shape[1]
        umap_ms, pca_ms = refresh_times(name, args.releases)
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as numba_cache:
            cold = fresh_process_fit(name, cache, numba_cache)
            warm = fresh_process_fit(name, cache, numba_cache)
        assert not cold["hit"] and warm["hit"] and not warm["umap_imported"]
        print(f"| {name} | {len(x)} | {dims} | {_ms(umap_ms)} | {_ms(pca_ms)} | {cold['first']:.1f} "
              f"| {cold['again']:.2f} | {warm['first']:.3f} |")
    print("\nPlacement in the dense UMAP frame (displacement in units of the embedding's RMS radius: for the"
          " dense points, from their fitted positions; otherwise from the other method's placement; knn ="
          " agreement of the 10 nearest reference points, feature space vs embedding)\n")
    print("| model | features | placement | ms | displacement | knn agreement |")
    print("|---|---|---|---:|---:|---:|")
    for name in models:
        for row in placement_rows(name):
            print(f"| {row['model']} | {row['features']} | {row['placement']} | {row['ms']:.2f} "
                  f"| {row['displacement']:.4f} | {row['knn']:.3f} |")


if __name__ == "__main__":
    main()
