"""Shared fixtures for the kernel tests: seeded random inputs and the norm-based error check."""

from __future__ import annotations

import zlib
from typing import Callable

import numpy as np
import pytest

TOLERANCE = 1e-5  # relative error ||actual - expected|| / ||expected|| allowed in float32


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """A generator seeded from the test's id: fresh inputs per test, reproducible per run."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def _assert_close(actual: object, expected: object, tolerance: float = TOLERANCE) -> None:
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    scale = np.linalg.norm(expected)
    error = np.linalg.norm(actual - expected)
    if scale == 0.0:
        assert error == 0.0, f"expected all zeros, got error norm {error}"
    else:
        assert error / scale <= tolerance, f"relative error {error / scale:.3g} > {tolerance}"


@pytest.fixture
def assert_close() -> Callable[..., None]:
    """``assert_close(actual, expected)``: norm-based relative error <= 1e-5 (float32)."""
    return _assert_close


def _random_masked(rng: np.random.Generator, shape: tuple[int, ...], sparsity: float):
    weight = rng.standard_normal(shape).astype(np.float32)
    mask = rng.random(shape) >= sparsity
    return weight, mask


@pytest.fixture
def random_masked() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """``random_masked(rng, shape, sparsity)`` -> (float32 weight, boolean mask)."""
    return _random_masked
