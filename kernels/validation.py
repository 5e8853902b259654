"""Input validation at the kernels' edge: every array a kernel reads passes through here.

Numba kernels do no bounds checks, so anything wrong (dtype, shape, NaN, an index out of range)
must be caught here and reported as a ``ValueError`` that names the bad value and what is
allowed. torch tensors are accepted wherever numpy arrays are; torch itself is never imported
here (a tensor can only exist if the caller imported torch).
"""

from __future__ import annotations

import sys
from typing import Sequence

import numpy as np


def require(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition`` holds."""
    if not condition:
        raise ValueError(message)


def is_torch_tensor(value: object) -> bool:
    """True if ``value`` is a ``torch.Tensor`` (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def to_numpy(value: object, name: str) -> np.ndarray:
    """``value`` as a numpy array; CPU torch tensors are shared without a copy where possible."""
    if is_torch_tensor(value):
        tensor = value.detach()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        if tensor.dtype == sys.modules["torch"].bfloat16:  # numpy has no bfloat16
            tensor = tensor.float()
        return tensor.resolve_conj().resolve_neg().numpy()
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple, int, float)) or np.isscalar(value):
        return np.asarray(value)
    raise ValueError(f"{name} must be a numpy array or torch tensor, got {type(value).__name__}")


def as_float32_array(value: object, name: str, ndim: int | None = None,
                     min_ndim: int | None = None) -> np.ndarray:
    """``value`` as a C-contiguous float32 numpy array with the asked number of dimensions.

    Floating and integer dtypes are converted; bool, complex and object dtypes are refused.
    Non-contiguous inputs are copied into contiguous memory.
    """
    array = to_numpy(value, name)
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{name} must have a real floating or integer dtype (float32 "
                         f"preferred), got dtype {array.dtype}")
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(array.shape)}")
    if min_ndim is not None and array.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape "
                         f"{tuple(array.shape)}")
    return np.ascontiguousarray(array, dtype=np.float32)


def check_finite(array: np.ndarray, name: str) -> None:
    """Raise ``ValueError`` naming the first NaN or infinite entry of ``array``."""
    if array.size and not np.isfinite(array).all():
        flat = int(np.flatnonzero(~np.isfinite(array.ravel()))[0])
        where = np.unravel_index(flat, array.shape)
        raise ValueError(f"{name} must be finite, but {name}[{', '.join(map(str, where))}] = "
                         f"{array.ravel()[flat]}")


def as_mask_array(value: object, name: str, shape: Sequence[int]) -> np.ndarray:
    """``value`` as a boolean array of exactly ``shape``; 0/1 numbers are accepted."""
    array = to_numpy(value, name)
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"{name} shape {tuple(array.shape)} must equal the weight shape "
                         f"{tuple(shape)}")
    if array.dtype == np.bool_:
        return array
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be boolean or 0/1 numbers, got dtype {array.dtype}")
    if array.size and not np.isin(array, (0, 1)).all():
        bad = array.ravel()[np.flatnonzero(~np.isin(array.ravel(), (0, 1)))[0]]
        raise ValueError(f"{name} must be boolean or 0/1 numbers, found the value {bad}")
    return array.astype(bool)


def as_index_vector(value: object, name: str, size: int) -> np.ndarray:
    """Unique integer indices into an axis of length ``size`` as an int64 numpy vector."""
    array = to_numpy(value, name)
    if array.dtype == np.bool_:
        raise ValueError(f"{name} must hold integer indices, got a boolean array (use "
                         f"np.flatnonzero(mask) to turn a mask into indices)")
    require(array.ndim == 1, f"{name} must be 1-D, got shape {tuple(array.shape)}")
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    require(array.dtype.kind in "iu", f"{name} must hold integers, got dtype {array.dtype}")
    array = array.astype(np.int64)
    bad = np.flatnonzero((array < 0) | (array >= size))
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}] = {array[bad[0]]} is out of range, allowed "
                         f"0 <= index < {size}")
    if np.unique(array).size != array.size:
        raise ValueError(f"{name} must not repeat an index")
    return array
