"""Benchmark the sparse kernels against dense torch, torch.sparse and scipy; print Markdown tables.

    .venv/bin/python benchmarks/kernels.py            # full grid (about 10 minutes on 2 cores)
    .venv/bin/python benchmarks/kernels.py --quick    # a small subset (about a minute)

Three tables: CSR linear (W (N, K) x batch x sparsity), 2:4 N:M linear, and sparse conv. Times
are medians of an adaptive number of runs (at least 5, until about 0.25 s per method). Every row
also gives the useful GFLOP/s (2 * nnz * batch / time) and the roofline efficiency
``t_roof / t_ours`` with ``t_roof = max(FLOPs / peak, bytes / bandwidth)``; peak (a large dense
float32 matmul in torch) and bandwidth (a parallel read or copy of 512 MB) are measured at start
with the same number of threads as Numba uses. Each row waits for a quiet machine, is retried
while other processes used more than 10% of the CPUs during it, and reports that "other load".
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from typing import Any, Callable

import numba
import numpy as np
import scipy.sparse
import torch
import torch.nn.functional as F

from prunescope.kernels import (
    NMLinear,
    SparseConv2d,
    SparseLinear,
    nm_linear,
    sparse_conv2d,
    sparse_linear,
    threading_layer,
    warmup,
)
from prunescope.kernels import conv as conv_kernels

MIN_REPEATS, MAX_REPEATS, TARGET_SECONDS = 5, 2000, 0.25
MAX_FOREIGN_LOAD, ROW_ATTEMPTS, QUIET_WAIT_SECONDS = 0.1, 3, 30.0
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def median_ms(fn: Callable[[], Any]) -> float:
    """Median wall time of ``fn`` in ms, after one untimed call, over an adaptive repeat count."""
    fn()
    times: list[float] = []
    while len(times) < MIN_REPEATS or (sum(times) < TARGET_SECONDS and len(times) < MAX_REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _cpu_jiffies() -> tuple[int, int]:
    """(all, idle) CPU time of the machine in clock ticks, from /proc/stat (Linux)."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    return sum(values), values[3] + values[4]


def busy_fraction(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy (any process) over ``seconds``; NaN where /proc is missing."""
    try:
        total0, idle0 = _cpu_jiffies()
        time.sleep(seconds)
        total1, idle1 = _cpu_jiffies()
    except OSError:
        return float("nan")
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def measure_row(timers: dict[str, Callable[[], Any]]) -> tuple[dict[str, float], float]:
    """Median ms of each timer, measured while other processes leave the CPUs alone.

    Waits (up to ``QUIET_WAIT_SECONDS``) for a quiet machine, measures, and computes the share
    of the CPUs that *other* processes used meanwhile (all busy time minus this process's);
    retries up to ``ROW_ATTEMPTS`` times while that share exceeds ``MAX_FOREIGN_LOAD``.
    Returns the times and the foreign load of the kept attempt (NaN without /proc).
    """
    for _ in range(ROW_ATTEMPTS):
        deadline = time.perf_counter() + QUIET_WAIT_SECONDS
        while busy_fraction(0.2) > MAX_FOREIGN_LOAD and time.perf_counter() < deadline:
            pass
        try:
            jiffies0, process0, wall0 = _cpu_jiffies(), sum(os.times()[:2]), time.perf_counter()
        except OSError:
            return {name: median_ms(fn) for name, fn in timers.items()}, float("nan")
        times = {name: median_ms(fn) for name, fn in timers.items()}
        jiffies1, process1, wall1 = _cpu_jiffies(), sum(os.times()[:2]), time.perf_counter()
        machine_busy = ((jiffies1[0] - jiffies0[0]) - (jiffies1[1] - jiffies0[1])) / TICKS
        capacity = (os.cpu_count() or 1) * (wall1 - wall0)
        foreign = max(0.0, machine_busy - (process1 - process0)) / capacity
        if foreign <= MAX_FOREIGN_LOAD:
            break
    return times, foreign


@numba.njit(parallel=True, nogil=True, cache=True, fastmath=True)
def _parallel_sum(values: np.ndarray) -> float:
    total = np.float32(0.0)
    for i in numba.prange(values.size):
        total += values[i]
    return total


@numba.njit(parallel=True, nogil=True, cache=True)
def _parallel_copy(source: np.ndarray, target: np.ndarray) -> None:
    for i in numba.prange(source.size):
        target[i] = source[i]


def measure_machine() -> tuple[float, float]:
    """(peak GFLOP/s of a 4096^3 float32 torch matmul, memory bandwidth GB/s).

    The bandwidth is the better of a parallel read (sum) and a parallel copy (read + write
    bytes) of a 512 MB array, well beyond the last-level cache.
    """
    deadline = time.perf_counter() + QUIET_WAIT_SECONDS
    while busy_fraction(0.2) > MAX_FOREIGN_LOAD and time.perf_counter() < deadline:
        pass
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    peak = 2 * 4096**3 / (min(median_ms(lambda: a @ b) for _ in range(2)) * 1e-3) / 1e9
    source = np.ones(1 << 27, dtype=np.float32)
    target = np.empty_like(source)
    read = source.nbytes / (median_ms(lambda: _parallel_sum(source)) * 1e-3) / 1e9
    copy = 2 * source.nbytes / (median_ms(lambda: _parallel_copy(source, target)) * 1e-3) / 1e9
    return peak, max(read, copy)


def roofline_ms(flops: float, nbytes: float, peak: float, bandwidth: float) -> float:
    """Lower bound on the time of a kernel: compute- or memory-bound, whichever is slower."""
    return max(flops / (peak * 1e9), nbytes / (bandwidth * 1e9)) * 1e3


def masked_weight(rng: np.random.Generator, rows: int, cols: int, sparsity: float) -> np.ndarray:
    """A float32 normal weight with a fraction ``sparsity`` of entries zeroed at random."""
    weight = rng.standard_normal((rows, cols)).astype(np.float32)
    weight[rng.random((rows, cols)) < sparsity] = 0.0
    return weight


def fmt(value: float, digits: int = 3) -> str:
    """A time for the tables: 3 significant digits, no decimals from 100 on."""
    return f"{value:.{digits}g}" if value < 100 else f"{value:.0f}"


def csr_table(shapes, batches, sparsities, peak, bandwidth, rng, results: list[dict]) -> list[str]:
    """Markdown rows of the CSR table; each row's ratios are also appended to ``results``."""
    lines = ["| N x K | batch | sparsity | dense torch ms | torch.sparse ms | scipy ms | ours ms "
             "| x dense | x torch.sparse | x scipy | GFLOP/s | roofline | other load |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for rows, cols in shapes:
        for sparsity in sparsities:
            weight = masked_weight(rng, rows, cols, sparsity)
            layer = SparseLinear.from_dense(weight)
            dense_t = torch.from_numpy(weight)
            csr_t = dense_t.to_sparse_csr()
            csr_s = scipy.sparse.csr_matrix(weight)
            nnz = layer.nnz
            for batch in batches:
                x = rng.standard_normal((batch, cols)).astype(np.float32)
                x_t = torch.from_numpy(x)
                times, load = measure_row({
                    "dense": lambda: F.linear(x_t, dense_t),
                    "tsparse": lambda: torch.sparse.mm(csr_t, x_t.T),
                    "scipy": lambda: csr_s @ x.T,
                    "ours": lambda: sparse_linear(x, layer)})
                dense, tsparse, scipy_ms, ours = (times[k] for k in
                                                  ("dense", "tsparse", "scipy", "ours"))
                flops = 2.0 * nnz * batch
                nbytes = nnz * 8 + (rows + 1) * 4 + 4 * cols * batch + 4 * rows * batch
                roof = roofline_ms(flops, nbytes, peak, bandwidth)
                results.append(dict(shape=f"{rows} x {cols}", batch=batch, sparsity=sparsity,
                                    vs_dense=dense / ours, vs_torch_sparse=tsparse / ours))
                lines.append(
                    f"| {rows} x {cols} | {batch} | {sparsity:.0%} | {fmt(dense)} | "
                    f"{fmt(tsparse)} | {fmt(scipy_ms)} | {fmt(ours)} | {dense / ours:.2f} | "
                    f"{tsparse / ours:.2f} | {scipy_ms / ours:.2f} | "
                    f"{flops / ours / 1e6:.1f} | {roof / ours:.0%} | {load:.0%} |")
                print(lines[-1], file=sys.stderr, flush=True)
    return lines


def nm_table(shapes, batches, peak, bandwidth, rng, results: list[dict]) -> list[str]:
    """Markdown rows of the 2:4 table; each row's ratio is also appended to ``results``."""
    lines = ["| N x K | batch | dense torch ms | ours 2:4 ms | ours CSR 50% ms | x dense (2:4) "
             "| GFLOP/s (2:4) | roofline (2:4) | other load |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for rows, cols in shapes:
        weight = np.random.default_rng(1).standard_normal((rows, cols)).astype(np.float32)
        groups = np.abs(weight).reshape(rows, cols // 4, 4)
        keep = np.argsort(-groups, axis=2)[:, :, :2]
        mask = np.zeros_like(groups, dtype=bool)
        np.put_along_axis(mask, keep, True, axis=2)
        mask = mask.reshape(rows, cols)
        nm_layer = NMLinear.from_dense(weight, mask, 2, 4)
        csr_layer = SparseLinear.from_dense(weight, mask)
        dense_t = torch.from_numpy(np.where(mask, weight, 0))
        nnz = rows * cols // 2
        for batch in batches:
            x = rng.standard_normal((batch, cols)).astype(np.float32)
            x_t = torch.from_numpy(x)
            times, load = measure_row({"dense": lambda: F.linear(x_t, dense_t),
                                       "ours": lambda: nm_linear(x, nm_layer),
                                       "csr": lambda: sparse_linear(x, csr_layer)})
            dense, ours, csr = times["dense"], times["ours"], times["csr"]
            flops = 2.0 * nnz * batch
            nbytes = nnz * 5 + 4 * cols * batch + 4 * rows * batch
            roof = roofline_ms(flops, nbytes, peak, bandwidth)
            results.append(dict(shape=f"{rows} x {cols}", batch=batch, vs_dense=dense / ours))
            lines.append(f"| {rows} x {cols} | {batch} | {fmt(dense)} | {fmt(ours)} | {fmt(csr)} | "
                         f"{dense / ours:.2f} | {flops / ours / 1e6:.1f} | {roof / ours:.0%} | "
                         f"{load:.0%} |")
            print(lines[-1], file=sys.stderr, flush=True)
    return lines


def conv_table(cases, sparsities, rng) -> list[str]:
    """Markdown rows of the conv table (dispatched, and both single-thread variants)."""
    lines = ["| batch, C_in -> C_out, H x W, 3x3 pad 1 | sparsity | dense torch ms | ours ms "
             "| x dense | im2col 1 thread ms | direct 1 thread ms | other load |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for batch, c_in, c_out, size in cases:
        x = rng.standard_normal((batch, c_in, size, size)).astype(np.float32)
        x_t = torch.from_numpy(x)
        for sparsity in sparsities:
            weight = masked_weight(rng, c_out, c_in * 9, sparsity).reshape(c_out, c_in, 3, 3)
            layer = SparseConv2d.from_dense(weight, padding=1)
            weight_t = torch.from_numpy(weight)
            w = layer.weight
            out = np.empty((batch, c_out, size * size), np.float32)
            times, load = measure_row({
                "dense": lambda: F.conv2d(x_t, weight_t, None, 1, 1),
                "ours": lambda: sparse_conv2d(x, layer),
                "serial": lambda: sparse_conv2d(x, layer, parallel=False),
                "direct": lambda: conv_kernels.csr_conv2d_direct(
                    w.data, w.indices, w.indptr, x, layer.bias, out, layer.geometry(size))})
            dense, ours, serial, direct = (times[k] for k in ("dense", "ours", "serial", "direct"))
            lines.append(f"| {batch}, {c_in} -> {c_out}, {size} x {size} | {sparsity:.0%} | "
                         f"{fmt(dense)} | {fmt(ours)} | {dense / ours:.2f} | {fmt(serial)} | "
                         f"{fmt(direct)} | {load:.0%} |")
            print(lines[-1], file=sys.stderr, flush=True)
    return lines


def goal_summary(csr_results: list[dict], nm_results: list[dict]) -> list[str]:
    """How many rows meet the performance goals, and which miss them."""
    lines = []
    wanted = [r for r in csr_results if r["sparsity"] >= 0.9 and r["batch"] >= 32]
    if wanted:
        def meets(r: dict) -> bool:
            return r["vs_dense"] >= 3.0 and r["vs_torch_sparse"] >= 1.5

        dense_ok = [r for r in wanted if r["vs_dense"] >= 3.0]
        sparse_ok = [r for r in wanted if r["vs_torch_sparse"] >= 1.5]
        both = [r for r in wanted if meets(r)]
        lines += [f"- CSR, sparsity >= 90% and batch >= 32 ({len(wanted)} rows): >= 3x faster "
                  f"than dense torch in {len(dense_ok)}, >= 1.5x faster than torch.sparse.mm in "
                  f"{len(sparse_ok)}, both in {len(both)}."]
        by_shape: dict[str, list[int]] = {}
        for r in wanted:
            counts = by_shape.setdefault(r["shape"], [0, 0])
            counts[0] += 1
            counts[1] += meets(r)
        lines += ["  Both goals met, per shape: " + ", ".join(
            f"{shape} {ok}/{total}" for shape, (total, ok) in by_shape.items()) + "."]
    big = [r for r in nm_results if r["batch"] >= 64]
    if big:
        ok = [r for r in big if r["vs_dense"] >= 1.0]
        lines += [f"- 2:4 at batch >= 64 ({len(big)} rows): not slower than dense torch in "
                  f"{len(ok)}; ours / dense time between {1 / max(r['vs_dense'] for r in big):.2f}"
                  f" and {1 / min(r['vs_dense'] for r in big):.2f}."]
    return lines


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the Markdown report to stdout (progress goes to stderr)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small subset of the grid")
    parser.add_argument("--out", help="also write the Markdown report to this file")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
    threads = numba.get_num_threads()
    torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    busy = busy_fraction()
    warmup(background=False).result()
    peak, bandwidth = measure_machine()
    rng = np.random.default_rng(0)
    if args.quick:
        shapes, batches, sparsities = [(1024, 1024), (4096, 4096)], [1, 32, 256], [0.9, 0.99]
        nm_shapes, nm_batches = [(4096, 4096)], [1, 64, 256]
        conv_cases, conv_sparsities = [(8, 64, 64, 32)], [0.9, 0.99]
    else:
        sizes = (256, 1024, 4096)
        shapes = [(n, k) for n in sizes for k in sizes]
        batches, sparsities = [1, 32, 256], [0.5, 0.8, 0.9, 0.95, 0.99]
        nm_shapes, nm_batches = [(1024, 1024), (4096, 4096)], [1, 8, 32, 64, 128, 256]
        conv_cases = [(8, 64, 64, 32), (32, 128, 128, 16), (1, 256, 256, 14)]
        conv_sparsities = [0.5, 0.9, 0.95, 0.99]
    header = [
        f"Threads: {threads} (Numba threading layer {threading_layer()}, torch "
        f"{torch.get_num_threads()}); CPU busy before start: {busy:.0%}; measured peak "
        f"{peak:.0f} GFLOP/s (torch float32 matmul), bandwidth {bandwidth:.1f} GB/s (parallel "
        f"read or copy of 512 MB); torch {torch.__version__}, numba {numba.__version__}, scipy "
        f"{scipy.__version__}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')} "
        f"(left as is: torch uses MKL). Times are medians in ms; x columns are baseline time / "
        f"ours (> 1: ours faster).", ""]
    csr_results: list[dict] = []
    nm_results: list[dict] = []
    report = header + ["### CSR linear: Y = X @ W.T", ""]
    report += csr_table(shapes, batches, sparsities, peak, bandwidth, rng, csr_results)
    report += ["", "### 2:4 N:M linear", ""]
    report += nm_table(nm_shapes, nm_batches, peak, bandwidth, rng, nm_results)
    report += ["", "### Sparse Conv2d (im2col + CSR)", ""]
    report += conv_table(conv_cases, conv_sparsities, rng)
    report += ["", "### Goals", ""] + goal_summary(csr_results, nm_results)
    text = "\n".join(report)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
