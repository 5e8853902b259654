"""Shared inputs for the lottery tests: digits_mlp's theta_0, theta_k, data and prunable weights."""

from __future__ import annotations

import pytest

from prunescope.explorer.lottery.sample import sample_ticket_inputs


@pytest.fixture(scope="session")
def mlp_inputs() -> dict:
    """find_ticket's model-side arguments for digits_mlp (read-only in the tests)."""
    return sample_ticket_inputs("digits_mlp")


@pytest.fixture
def fast(mlp_inputs) -> dict:
    """A copy of the inputs with few epochs: the arguments of a fast search."""
    return {**mlp_inputs, "epochs": 1}
