"""App fixtures: one ExplorerApp per test, closed only after its background work finished."""

from __future__ import annotations

import pytest
import torch

from prunescope.explorer.app import ExplorerApp


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
