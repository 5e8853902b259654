"""The Geometry tab's refresh after a slider release, measured at the app level.

    .venv/bin/python benchmarks/geometry_tab.py [--releases 12] [--models digits_mlp ...] [--threads 1]

For each sample model on its full test split, a :class:`GeometryView` (outside a server: its
updates run inline) is refreshed after each global-magnitude sparsity of 5%..95%: the pruned
forward (one forward gives the features, the logits and the CKA layers), the placement in the
dense frame (PCA, and UMAP with neighbour placement once the frame is fitted), the robustness
geometry of clean and corrupted inputs, the histogram and fragile tables and the Bokeh sources'
new data. The masks are computed first (the pruning step, not timed), like
``benchmarks/geometry.py``. CKA runs on its own worker after the scatter and is timed apart.
Bokeh's serialisation to a browser is not included.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from prunescope.explorer import Explorer
from prunescope.explorer.app.dispatch import SessionDispatcher
from prunescope.explorer.app.geometry_view import GeometryView
from prunescope.explorer.geometry.facade import dense_frame
from prunescope.sample_models import get_sample_model, list_sample_models


def release_times(name: str, method: str, releases: int, corruption: str) -> tuple[list[float], ...]:
    """Milliseconds per release until the scatter's data is set (features + placement + geometry
    + the new source data), until the histograms and fragile samples are (with ``corruption`` at
    severity 3: one more pruned forward), and until CKA is; then the seconds of the dense frame's
    fit (not part of a release)."""
    ex = Explorer.from_sample(name)
    view = GeometryView(SessionDispatcher(), on_error=lambda err: (_ for _ in ()).throw(err))
    view.set_explorer(ex)
    view.method.value = method
    view.corruption.value = corruption
    start = time.perf_counter()
    dense_frame(ex, None, method)
    fit = time.perf_counter() - start
    scatter, rest, cka = [], [], []
    try:
        for sparsity in np.linspace(0.05, 0.95, releases):
            ex.prune("magnitude", sparsity=float(sparsity))
            ex.masks  # the pruning step itself is not timed
            start = time.perf_counter()
            view.refresh()
            assert view._worker.wait_idle(600)
            rest.append(1e3 * (time.perf_counter() - start))
            scatter.append(1e3 * view.scatter_seconds)
            assert view._cka_worker.wait_idle(600)
            cka.append(1e3 * (time.perf_counter() - start))
            assert view.embedding is not None and view.embedding.attrs["setting"].endswith(f"{sparsity:g}")
    finally:
        view.close()
    return scatter, rest, cka, [fit]


def _ms(times: list[float]) -> str:
    return f"{min(times):.0f} / {np.percentile(times, 50):.0f} / {np.percentile(times, 95):.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--releases", type=int, default=12)
    parser.add_argument("--models", nargs="*", default=list_sample_models())
    parser.add_argument("--methods", nargs="*", default=["pca", "umap"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--corruption", default="gaussian_noise", help="histograms' corruption ('none': clean only)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("PRUNESCOPE_CACHE_DIR", tempfile.mkdtemp(prefix="prunescope-bench-"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print(f"| model | test samples | frame | frame fit s (not per release) | scatter (features + placement + data) "
          f"min / p50 / p95 ms | + histograms & fragile ({args.corruption} 3) ms | + CKA (own worker) ms |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for name in args.models:
        spec = get_sample_model(name)
        if not spec.checkpoint_path("trained").is_file():
            print(f"| {name} | skipped: no trained weights |")
            continue
        for method in args.methods:
            scatter, rest, cka, (fit,) = release_times(name, method, args.releases, args.corruption)
            print(f"| {name} | {len(spec.data('test')[1])} | {method} | {fit:.1f} | {_ms(scatter)} | {_ms(rest)} "
                  f"| {_ms(cka)} |", flush=True)


if __name__ == "__main__":
    main()
