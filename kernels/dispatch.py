"""The one dispatch point: validate at the edge, choose a backend and a kernel variant, run.

Backends: ``numba-cpu`` (the kernels of :mod:`~prunescope.kernels.spmm` and
:mod:`~prunescope.kernels.conv`), ``numba-cuda`` (:mod:`~prunescope.kernels.cuda`, for
``sparse_linear`` and ``nm_linear``) and ``torch`` (the dense reference: ``F.linear`` /
``F.conv2d`` on the masked dense weight). ``backend="auto"`` picks ``numba-cuda`` for inputs
that already live on a CUDA device (when a GPU is present) and ``numba-cpu`` otherwise.

Inputs may be numpy arrays or torch tensors; the result has the caller's type (and device). Any
floating or integer dtype is converted to float32; everything else, wrong shapes and NaN/inf give
a ``ValueError`` that names the bad value. Non-contiguous inputs are made contiguous.

On ``numba-cpu`` the serial kernel runs below ``PARALLEL_MIN_WORK`` multiply-adds and the
parallel one above (``parallel=True/False`` forces a variant); parallel kernels run inside
:func:`~prunescope.kernels.threads.parallel_section`.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import numpy as np

from prunescope.kernels import conv, spmm
from prunescope.kernels.layers import NMLinear, SparseConv2d, SparseLinear
from prunescope.kernels.threads import num_threads, parallel_section
from prunescope.kernels.validation import (
    as_float32_array,
    check_finite,
    is_torch_tensor,
    require,
)

BACKENDS = ("numba-cpu", "numba-cuda", "torch")
PARALLEL_MIN_WORK = 1 << 20  # multiply-adds (about 0.1 ms on one core) before threads pay off
TASKS_PER_THREAD = 4  # row ranges per thread, so that uneven rows still balance


def available_backends() -> list[str]:
    """The backends that can run here, among ``numba-cpu``, ``numba-cuda`` and ``torch``."""
    found = ["numba-cpu"]
    if _cuda_available():
        found.append("numba-cuda")
    if "torch" in sys.modules or importlib.util.find_spec("torch") is not None:
        found.append("torch")
    return found


def sparse_linear(x: Any, layer: SparseLinear, backend: str = "auto",
                  parallel: bool | None = None) -> Any:
    """``x @ W.T + bias`` for a prepared :class:`SparseLinear`; ``x`` is (..., in_features)."""
    require(isinstance(layer, SparseLinear),
            f"layer must be a SparseLinear, got {type(layer).__name__}")
    return _linear(x, layer, backend, parallel)


def nm_linear(x: Any, layer: NMLinear, backend: str = "auto",
              parallel: bool | None = None) -> Any:
    """``x @ W.T + bias`` for a prepared N:M :class:`NMLinear`; ``x`` is (..., in_features)."""
    require(isinstance(layer, NMLinear), f"layer must be an NMLinear, got {type(layer).__name__}")
    return _linear(x, layer, backend, parallel)


def sparse_conv2d(x: Any, layer: SparseConv2d, backend: str = "auto",
                  parallel: bool | None = None) -> Any:
    """The convolution of ``x`` (B, C_in, H, W) or (C_in, H, W) by a :class:`SparseConv2d`.

    Backends ``numba-cpu`` and ``torch``; ``auto`` means ``numba-cpu``.
    """
    require(isinstance(layer, SparseConv2d),
            f"layer must be a SparseConv2d, got {type(layer).__name__}")
    backend = _check_backend(backend, allowed=("numba-cpu", "torch"))
    if backend == "auto":
        backend = "numba-cpu"
    images = _input_array(x, "x")
    require(images.ndim in (3, 4), f"x must be (B, C, H, W) or (C, H, W), got shape "
                                   f"{tuple(images.shape)}")
    unbatched = images.ndim == 3
    if unbatched:
        images = images[None]
    batch, channels, height, width = images.shape
    require(channels == layer.in_channels,
            f"x has {channels} channels, the layer expects in_channels={layer.in_channels}")
    out_h, out_w = (conv.conv_output_size(size, k, s, p, d) for size, k, s, p, d in zip(
        (height, width), layer.kernel_size, layer.stride, layer.padding, layer.dilation))
    require(out_h >= 1 and out_w >= 1,
            f"input {height}x{width} is too small for kernel {layer.kernel_size}, padding "
            f"{layer.padding}, dilation {layer.dilation}: output would be {out_h}x{out_w}")
    if backend == "torch":
        out = _torch_conv2d(images, layer)
    else:
        out = _conv2d_cpu(images, layer, out_h, out_w, parallel)
    return _to_caller(out[0] if unbatched else out, x)


def _linear(x: Any, layer: SparseLinear | NMLinear, backend: str, parallel: bool | None) -> Any:
    """Shared edge of ``sparse_linear`` and ``nm_linear``."""
    backend = _check_backend(backend, allowed=BACKENDS)
    on_gpu = is_torch_tensor(x) and x.device.type == "cuda"
    if backend == "auto":
        backend = "numba-cuda" if on_gpu and _cuda_available() else "numba-cpu"
    if backend == "numba-cuda" and on_gpu:
        return _linear_cuda_tensor(x, layer)
    rows = _input_array(x, "x")
    require(rows.ndim >= 1 and rows.shape[-1] == layer.in_features,
            f"x must have shape (..., {layer.in_features}) for in_features={layer.in_features}, "
            f"got {tuple(rows.shape)}")
    lead_shape = rows.shape[:-1]
    rows = rows.reshape(-1, layer.in_features)
    if backend == "torch":
        out = _torch_linear(rows, layer)
    elif backend == "numba-cuda":
        out = _linear_cuda_host(rows, layer)
    elif isinstance(layer, SparseLinear):
        out = _csr_linear_cpu(rows, layer, parallel)
    else:
        out = _nm_linear_cpu(rows, layer, parallel)
    return _to_caller(out.reshape(*lead_shape, layer.out_features), x)


def _check_backend(backend: str, allowed: tuple[str, ...]) -> str:
    if backend == "auto":
        return backend
    require(backend in allowed, f"backend={backend!r} is not supported here; allowed: "
                                f"'auto', {', '.join(repr(b) for b in allowed)}")
    if backend != "numba-cpu" and backend not in available_backends():
        raise ValueError(f"backend={backend!r} is not available on this machine; available: "
                         f"{available_backends()}")
    return backend


def _input_array(x: Any, name: str) -> np.ndarray:
    array = as_float32_array(x, name, min_ndim=1)
    check_finite(array, name)
    return array


def _to_caller(out: np.ndarray, like: Any) -> Any:
    """``out`` as the caller passed ``like``: a torch tensor on its device, or numpy."""
    if is_torch_tensor(like):
        import torch

        return torch.from_numpy(np.ascontiguousarray(out)).to(like.device)
    return out


def _use_parallel(work: int, parallel: bool | None) -> bool:
    """The caller's choice if given, else threads for large enough work."""
    if parallel is not None:
        return bool(parallel)
    return work >= PARALLEL_MIN_WORK and num_threads() > 1


def _csr_linear_cpu(x: np.ndarray, layer: SparseLinear, parallel: bool | None) -> np.ndarray:
    batch = x.shape[0]
    out = np.empty((batch, layer.out_features), dtype=np.float32)
    if out.size == 0:
        return out
    w = layer.weight
    use_threads = _use_parallel(w.nnz * batch, parallel)
    splits = layer.row_splits(TASKS_PER_THREAD * num_threads()) if use_threads else None
    if batch == 1:
        if use_threads:
            with parallel_section():
                spmm.csr_spmv_parallel(w.data, w.indices, w.indptr, x[0], layer.bias, out[0],
                                       splits)
        else:
            spmm.csr_spmv_serial(w.data, w.indices, w.indptr, x[0], layer.bias, out[0])
        return out
    chunk = spmm.batch_chunk_width(batch)
    bounds = layer.panel_bounds(spmm.panel_columns(layer.in_features, chunk))
    if use_threads:
        with parallel_section():
            xt = spmm.pack_batch_chunks_parallel(x, chunk)
            spmm.csr_spmm_parallel(w.data, w.indices, bounds, xt, layer.bias, out, splits)
    else:
        xt = spmm.pack_batch_chunks(x, chunk)
        spmm.csr_spmm_serial(w.data, w.indices, bounds, xt, layer.bias, out)
    return out


def _nm_linear_cpu(x: np.ndarray, layer: NMLinear, parallel: bool | None) -> np.ndarray:
    batch = x.shape[0]
    out = np.empty((batch, layer.out_features), dtype=np.float32)
    if out.size == 0:
        return out
    w = layer.weight
    base = layer.group_base()
    use_threads = _use_parallel(w.values.size * batch, parallel)
    splits = layer.row_splits(TASKS_PER_THREAD * num_threads()) if use_threads else None
    if batch == 1:
        if use_threads:
            with parallel_section():
                spmm.nm_spmv_parallel(w.values, w.offsets, base, x[0], layer.bias, out[0], splits)
        else:
            spmm.nm_spmv_serial(w.values, w.offsets, base, x[0], layer.bias, out[0])
        return out
    chunk = spmm.batch_chunk_width(batch)
    panel_entries = spmm.panel_columns(layer.in_features, chunk, w.m) // w.m * w.n
    if use_threads:
        with parallel_section():
            xt = spmm.pack_batch_chunks_parallel(x, chunk)
            spmm.nm_spmm_parallel(w.values, w.offsets, base, panel_entries, xt, layer.bias, out,
                                  splits)
    else:
        xt = spmm.pack_batch_chunks(x, chunk)
        spmm.nm_spmm_serial(w.values, w.offsets, base, panel_entries, xt, layer.bias, out)
    return out


def _conv2d_cpu(x: np.ndarray, layer: SparseConv2d, out_h: int, out_w: int,
                parallel: bool | None) -> np.ndarray:
    batch = x.shape[0]
    positions = out_h * out_w
    out = np.empty((batch, layer.out_channels, positions), dtype=np.float32)
    if out.size == 0:
        return out.reshape(batch, layer.out_channels, out_h, out_w)
    w = layer.weight
    taps = w.shape[1]
    use_threads = _use_parallel(w.nnz * positions * batch, parallel)
    threads = num_threads() if use_threads else 1
    chunk = conv.position_chunk_width(positions, taps, batch, threads)
    geometry = layer.geometry(out_w)
    if use_threads:
        with parallel_section():
            conv.csr_conv2d_parallel(w.data, w.indices, w.indptr, x, layer.bias, out, geometry,
                                     chunk)
    else:
        conv.csr_conv2d_serial(w.data, w.indices, w.indptr, x, layer.bias, out, geometry, chunk)
    return out.reshape(batch, layer.out_channels, out_h, out_w)


def _dense_weight(layer: SparseLinear | NMLinear | SparseConv2d) -> np.ndarray:
    if isinstance(layer, SparseConv2d):
        return layer.weight.to_dense().reshape(layer.out_channels, layer.in_channels,
                                                *layer.kernel_size)
    return layer.weight.to_dense()


def _torch_weights(layer: SparseLinear | NMLinear | SparseConv2d, device: Any) -> tuple:
    import torch

    def make() -> tuple:
        weight = torch.from_numpy(_dense_weight(layer)).to(device)
        bias = torch.from_numpy(layer.bias).to(device) if layer.has_bias else None
        return weight, bias

    return layer.cached(("torch", str(device)), make)


def _torch_linear(x: np.ndarray, layer: SparseLinear | NMLinear) -> np.ndarray:
    import torch

    weight, bias = _torch_weights(layer, "cpu")
    with torch.no_grad():
        return torch.nn.functional.linear(torch.from_numpy(x), weight, bias).numpy()


def _torch_conv2d(x: np.ndarray, layer: SparseConv2d) -> np.ndarray:
    import torch

    weight, bias = _torch_weights(layer, "cpu")
    with torch.no_grad():
        return torch.nn.functional.conv2d(torch.from_numpy(x), weight, bias, layer.stride,
                                          layer.padding, layer.dilation).numpy()


def _cuda_available() -> bool:
    if importlib.util.find_spec("numba.cuda") is None:
        return False
    from prunescope.kernels import cuda as cuda_kernels

    return cuda_kernels.is_available()


def _device_weights(layer: SparseLinear | NMLinear) -> tuple:
    from prunescope.kernels import cuda as cuda_kernels

    def make() -> tuple:
        w = layer.weight
        arrays = (w.data, w.indices, w.indptr) if isinstance(layer, SparseLinear) else (
            w.values, w.offsets)
        return tuple(cuda_kernels.to_device(a) for a in (*arrays, layer.bias))

    return layer.cached("cuda", make)


def _run_cuda(layer: SparseLinear | NMLinear, xt: Any, out: Any) -> None:
    from prunescope.kernels import cuda as cuda_kernels

    arrays = _device_weights(layer)
    if isinstance(layer, SparseLinear):
        cuda_kernels.csr_spmm(*arrays[:3], xt, arrays[3], out)
    else:
        w = layer.weight
        cuda_kernels.nm_spmm(arrays[0], arrays[1], w.n, w.m, xt, arrays[2], out)


def _linear_cuda_host(x: np.ndarray, layer: SparseLinear | NMLinear) -> np.ndarray:
    """numba-cuda for host (numpy / CPU tensor) inputs: copy in, run, copy the result back."""
    from numba import cuda

    xt = cuda.to_device(np.ascontiguousarray(x.T))
    out = cuda.device_array((x.shape[0], layer.out_features), dtype=np.float32)
    _run_cuda(layer, xt, out)
    return out.copy_to_host()


def _linear_cuda_tensor(x: Any, layer: SparseLinear | NMLinear) -> Any:
    """numba-cuda for torch CUDA tensors: no host round trip; returns a CUDA tensor."""
    import torch
    from numba import cuda

    if x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"x must have a real floating or integer dtype, got {x.dtype}")
    require(x.ndim >= 1 and x.shape[-1] == layer.in_features,
            f"x must have shape (..., {layer.in_features}), got {tuple(x.shape)}")
    rows = x.detach().reshape(-1, layer.in_features).to(torch.float32)
    if not bool(torch.isfinite(rows).all()):
        raise ValueError("x must be finite, but it holds NaN or infinite values")
    out = torch.empty((rows.shape[0], layer.out_features), dtype=torch.float32, device=x.device)
    _run_cuda(layer, cuda.as_cuda_array(rows.t().contiguous()), cuda.as_cuda_array(out))
    return out.reshape(*x.shape[:-1], layer.out_features)
