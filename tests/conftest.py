"""Shared fixtures: one explorer per sample model per test session (they are read-only there)."""

from __future__ import annotations

import pytest

from prunescope.sample_models import list_sample_models


@pytest.fixture(params=list_sample_models())
def sample_name(request) -> str:
    return request.param
