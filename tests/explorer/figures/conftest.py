"""Explorers shared by the figure tests (read-only there: tests never change their setting)."""

from __future__ import annotations

import pytest

from prunescope.explorer.engine import Explorer


@pytest.fixture(scope="session")
def mlp() -> Explorer:
    """The digits MLP pruned by LAMP at 80%."""
    return Explorer.from_sample("digits_mlp").prune("lamp", sparsity=0.8)


@pytest.fixture(scope="session")
def cnn() -> Explorer:
    """The digits CNN pruned by magnitude at 70%."""
    return Explorer.from_sample("digits_cnn").prune("magnitude", sparsity=0.7)
