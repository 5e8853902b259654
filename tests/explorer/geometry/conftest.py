"""Fixtures for the geometry tests: digits_mlp, its test split and a random-pruned params dict."""

from __future__ import annotations

import pytest
import torch

from prunescope.explorer.core.forward import masked_params
from prunescope.sample_models import get_sample_model


@pytest.fixture(scope="session")
def mlp():
    return get_sample_model("digits_mlp").load()


@pytest.fixture(scope="session")
def digits():
    return get_sample_model("digits_mlp").data("test")


@pytest.fixture(scope="session")
def random_masks(mlp) -> dict[str, torch.Tensor]:
    """Keep a seeded random 40% of every weight matrix (60% sparsity)."""
    g = torch.Generator().manual_seed(1234)
    return {name: torch.rand(p.shape, generator=g) < 0.4
            for name, p in mlp.named_parameters() if name.endswith("weight")}


@pytest.fixture(scope="session")
def pruned_params(mlp, random_masks) -> dict[str, torch.Tensor]:
    dense = {name: p.detach().clone() for name, p in mlp.named_parameters()}
    return masked_params(dense, random_masks)


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    """A fresh embedding cache directory through $PRUNESCOPE_CACHE_DIR."""
    monkeypatch.setenv("PRUNESCOPE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"
