"""Whole sample models through the sparse kernels vs their dense torch forward pass.

    .venv/bin/python benchmarks/models.py [--repeats 30]

For each digits sample model and setting (90% global magnitude, 90% LAMP, 90% Unif+, 2:4, 50% of
channels), at batch 1, 64 and 256: the median time of the dense torch forward and of the sparse
execution (``Explorer.benchmark``, same run, same data), the measured speed-up, the FLOPs reduction
and the formats the weights ran in (a weight without a kernel runs in dense torch and says so).
"""

from __future__ import annotations

import argparse

import torch

from prunescope.explorer import Explorer
from prunescope.explorer.pruning import get_method
from prunescope.kernels import warmup

MODELS = ("digits_mlp", "digits_cnn")
SETTINGS = [
    ("global_magnitude", {"sparsity": 0.9}),
    ("lamp", {"sparsity": 0.9}),
    ("uniform_plus", {"sparsity": 0.9}),
    ("nm", {"n": 2, "m": 4}),
    ("channel", {"sparsity": 0.5}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: torch's default; 1 on a shared machine, where spinning OpenMP threads time the scheduler)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warmup(background=False)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians of {args.repeats} runs\n")
    print("| model | setting | batch | dense ms | sparse ms | measured speed-up | FLOPs reduction | formats |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for name in MODELS:
        ex = Explorer.from_sample(name, device="cpu")
        for method, options in SETTINGS:
            ex.prune(method, **options)
            label = get_method(method).describe(ex.setting.weights)
            for batch in (1, 64, 256):
                table = ex.benchmark(batch_size=batch, repeats=args.repeats).table
                whole = table.iloc[-1]
                formats = ", ".join(sorted(set(table["format"].iloc[:-1])))
                print(f"| {name} | {label} | {batch} | {whole.dense_ms:.3f} | {whole.sparse_ms:.3f} | "
                      f"{whole.measured_speedup:.2f}x | {whole.theoretical_speedup:.2f}x | {formats} |")


if __name__ == "__main__":
    main()
