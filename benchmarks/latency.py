"""Slider-to-metrics latency: prune + evaluate on the full test split, per sample model and method.

    .venv/bin/python benchmarks/latency.py [--settings 50]

Each method gets its first call (scores computed once: the cold cost of picking a method) timed
apart, then ``--settings`` random settings (a global sparsity, and half the time one layer set by
hand), each on a fresh memo so nothing is served from cache. Prints p50/p95 in ms and their ratio
to one dense forward pass over the same data, measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from prunescope.explorer import Explorer
from prunescope.sample_models import list_sample_models


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def dense_forward_seconds(ex: Explorer, repeats: int = 30) -> float:
    """Median time of one plain forward pass of the unpruned model over the evaluation data."""
    inputs = ex.eval_data[0]
    model = ex.model.eval()
    with torch.no_grad():
        model(inputs)
        return statistics.median(_time(lambda: model(inputs)) for _ in range(repeats))


def method_latencies(ex: Explorer, method: str, settings: int, rng: np.random.Generator) -> tuple[float, list[float]]:
    """(first call, per-setting latencies) of prune + evaluate for ``method``, in seconds."""
    def setting(i: int) -> None:
        if method == "nm":
            n = int(rng.integers(1, 4))
            ex.prune("nm", n=n, m=4)
        else:
            ex.prune(method, sparsity=float(rng.uniform(0.0, 0.99)))
        if i % 2:  # channel pruning never removes the model's outputs: hand-set a hidden layer
            layer = ex.layers[int(rng.integers(len(ex.layers) - 1))]
            ex.set_layer_sparsity(layer, 0.0 if method == "nm" else float(rng.uniform(0, 0.99)))
        ex.evaluate()

    ex.clear_caches()
    first = _time(lambda: setting(0))
    times = []
    for i in range(settings):
        ex.clear_caches(scores=False)  # scores are computed once per method, as in the app
        times.append(_time(lambda: setting(i)))
    return first, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", type=int, default=50, help="random settings per method (default 50)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.settings} random settings per method\n")
    print("| model | method | first call ms | p50 ms | p95 ms | p95 / dense forward |")
    print("|---|---|---:|---:|---:|---:|")
    for name in list_sample_models():
        ex = Explorer.from_sample(name)
        dense = dense_forward_seconds(ex)
        for method in ex.methods:
            first, times = method_latencies(ex, method, args.settings, rng)
            p50, p95 = np.percentile(times, [50, 95])
            print(f"| {name} | {method} | {first * 1e3:.1f} | {p50 * 1e3:.1f} | {p95 * 1e3:.1f} | {p95 / dense:.1f}x |")
        print(f"| {name} | *dense forward ({len(ex.eval_data[1])} samples)* | | {dense * 1e3:.2f} | | 1.0x |")


if __name__ == "__main__":
    main()
