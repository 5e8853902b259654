"""App fixtures: one ExplorerApp per test, closed only after its background work finished."""

from __future__ import annotations

import pytest
import torch

from prunescope.explorer.app import ExplorerApp
from prunescope.explorer.pruning import METHODS

#: Registered methods that cannot run on their default options, and why (never skipped silently).
NEEDS_INPUT = {"ticket": "its masks come from a ticket-search run directory (tested in tests/explorer/lottery)"}


@pytest.fixture(scope="session")
def runnable_methods() -> list[str]:
    """Every registered method that runs with its default options, in registry order; a method
    that does not must be listed in ``NEEDS_INPUT`` with its reason, or this fixture fails."""
    names = []
    for name, method in METHODS.items():
        try:
            method.check_options({})
        except ValueError as err:
            assert name in NEEDS_INPUT, f"method {name!r} does not run on its defaults ({err}); list it in NEEDS_INPUT"
            continue
        names.append(name)
    assert len(names) >= 9
    return names


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module (use with ``pytestmark = pytest.mark.usefixtures(...)``).

    On a shared machine with more busy processes than cores, OpenMP's threads spin at barriers and
    a tiny matmul can take 50x longer; tests of time budgets and fast suites need neither."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _close_app(app: ExplorerApp) -> None:
    """Let background work finish before closing: no torch call may outlive the test session."""
    assert app.wait_idle() and app.sensitivity.wait_idle() and app.speed.wait_idle()
    app.close()


@pytest.fixture(scope="session")
def close_app():
    """``close_app(app)`` for apps a test builds itself."""
    return _close_app


@pytest.fixture
def make_app():
    """``make_app(model)`` builds an app that is closed at teardown."""
    apps: list[ExplorerApp] = []

    def make(model: str = "digits_mlp") -> ExplorerApp:
        app = ExplorerApp(model=model)
        apps.append(app)
        assert app.wait_idle()
        return app

    yield make
    for app in apps:
        _close_app(app)


@pytest.fixture
def app(make_app) -> ExplorerApp:
    """The MLP app, its first evaluation done."""
    return make_app("digits_mlp")
