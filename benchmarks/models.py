"""Whole sample models through the sparse kernels vs their dense torch forward pass.

    .venv/bin/python benchmarks/models.py [--repeats 30]

For each sample model and setting (90% global magnitude, 90% LAMP, 2:4, 50% of channels), at
batch 1, 64 and 256: the median time of the dense torch forward and of the sparse execution
(``Explorer.benchmark``, same run, same data), the measured speed-up and the FLOPs reduction.
"""

from __future__ import annotations

import argparse

import torch

from prunescope.explorer import Explorer
from prunescope.kernels import warmup
from prunescope.sample_models import list_sample_models

SETTINGS = [
    ("global_magnitude", {"sparsity": 0.9}),
    ("lamp", {"sparsity": 0.9}),
    ("nm", {"n": 2, "m": 4}),
    ("channel", {"sparsity": 0.5}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    warmup(background=False)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians of {args.repeats} runs\n")
    print("| model | setting | batch | dense ms | sparse ms | measured speed-up | FLOPs reduction | formats |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for name in list_sample_models():
        ex = Explorer.from_sample(name)
        for method, options in SETTINGS:
            ex.prune(method, **options)
            label = f"{method} {options.get('sparsity', '')}".strip() if method != "nm" else "nm 2:4"
            for batch in (1, 64, 256):
                table = ex.benchmark(batch_size=batch, repeats=args.repeats).table
                whole = table.iloc[-1]
                formats = ", ".join(sorted(set(table["format"].iloc[:-1])))
                print(f"| {name} | {label} | {batch} | {whole.dense_ms:.3f} | {whole.sparse_ms:.3f} | "
                      f"{whole.measured_speedup:.2f}x | {whole.theoretical_speedup:.2f}x | {formats} |")


if __name__ == "__main__":
    main()
