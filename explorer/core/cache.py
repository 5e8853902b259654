"""A byte-bounded, thread-safe LRU memo for the engine's results."""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from typing import Any, Callable

import numpy as np
import torch

#: Default budget of one explorer's caches (all of them together share it), in bytes.
DEFAULT_CACHE_BYTES = 512 * 1024**2


def nbytes(obj: Any, _depth: int = 0) -> int:
    """Approximate memory held by ``obj``: tensors, arrays, DataFrames, containers, dataclasses."""
    if _depth > 6:
        return 64
    if isinstance(obj, torch.Tensor):
        return obj.element_size() * obj.numel() + 64
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes) + 64
    if hasattr(obj, "memory_usage") and hasattr(obj, "columns"):  # pandas DataFrame
        return int(obj.memory_usage(index=True, deep=False).sum()) + 64
    if isinstance(obj, dict):
        return 64 + sum(nbytes(k, _depth + 1) + nbytes(v, _depth + 1) for k, v in obj.items())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return 64 + sum(nbytes(v, _depth + 1) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return 64 + sum(nbytes(getattr(obj, f.name), _depth + 1) for f in dataclasses.fields(obj))
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        return 64 + sum(nbytes(v, _depth + 1) for v in vars(obj).values())
    return 64


class ByteLRU:
    """``get_or(key, compute)`` memo that evicts least-recently-used entries beyond ``max_bytes``.

    ``compute`` runs outside the lock (two threads may compute the same key once each; the
    results are equal because every result is a pure function of its key).
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.lock = threading.RLock()
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._bytes = 0

    def get_or(self, key: Any, compute: Callable[[], Any]) -> Any:
        with self.lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
        value = compute()
        self.put(key, value)
        return value

    def put(self, key: Any, value: Any) -> None:
        size = nbytes(value)
        with self.lock:
            if key in self._items:
                self._bytes -= self._items.pop(key)[1]
            if size > self.max_bytes:
                return  # larger than the whole budget: not kept
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, old) = self._items.popitem(last=False)
                self._bytes -= old

    def get(self, key: Any, default: Any = None) -> Any:
        with self.lock:
            item = self._items.get(key)
            return default if item is None else item[0]

    def __contains__(self, key: Any) -> bool:
        with self.lock:
            return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        """Bytes currently held (estimated with :func:`nbytes`)."""
        return self._bytes

    def clear(self) -> None:
        with self.lock:
            self._items.clear()
            self._bytes = 0
