"""The one job lifecycle every long-running view shares (JobOwner + JobPanel): a failing job
shows the app's alert, says so in its status line and leaves the view ready to run again."""

from __future__ import annotations

import pytest

from prunescope.explorer.app import ExplorerApp


@pytest.mark.parametrize(("view", "engine_call"), [("sensitivity", "sensitivity"), ("speed", "benchmark")])
def test_a_failing_job_shows_an_alert_and_can_run_again(close_app, monkeypatch, view, engine_call):
    app = ExplorerApp(model="digits_mlp")
    try:
        def broken(**kwargs):
            raise RuntimeError(f"{engine_call} broke (simulated)")

        monkeypatch.setattr(app.explorer, engine_call, broken)
        owner = getattr(app, view)
        owner.run()
        assert owner.wait_idle(60)
        assert app.alert.visible and f"{engine_call} broke (simulated)" in app.alert.object
        assert "failed" in owner.status.object.lower() and not owner.running
        assert owner.run_button is owner.job.run_button and not owner.run_button.disabled
        assert owner.cancel_button.disabled and not owner.progress.visible
    finally:
        close_app(app)
