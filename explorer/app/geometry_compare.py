"""The Geometry tab's comparison section: up to 4 pruning methods at the current sparsity (and token
budget), clean and under corruptions, as a job (progress, cancel); the table it shows is the
``geometry_compare`` figure's (Chen et al. 2022)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Callable

import panel as pn

from prunescope.explorer.app.dispatch import SessionDispatcher
from prunescope.explorer.app.export_view import ExportMenu
from prunescope.explorer.app.job_view import JobOwner, JobPanel
from prunescope.explorer.geometry.corruptions import CORRUPTIONS, SEVERITIES
from prunescope.explorer.geometry.facade import method_settings
from prunescope.explorer.geometry.figures import DEFAULT_METHODS, compare_table
from prunescope.explorer.geometry.robustness import MAX_SETTINGS

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from prunescope.explorer.core.setting import Setting
    from prunescope.explorer.engine import Explorer

_NOTE = {"font-size": "12px", "color": "#4b5563"}


class CompareSection(JobOwner, pn.viewable.Viewer):
    """Method, corruption and severity pickers, the Compare job, the table and its Export.

    Public for tests: ``methods``, ``corruptions``, ``severities``, ``job``, ``export``,
    ``table`` (the last result) and :meth:`run`."""

    def __init__(self, dispatch: SessionDispatcher, on_error: Callable[[BaseException], None]) -> None:
        super().__init__()
        self._on_error = on_error
        self._explorer: Explorer | None = None
        self.table: pd.DataFrame | None = None
        self.methods = pn.widgets.MultiChoice(label=f"Methods at the current sparsity (up to {MAX_SETTINGS})",
                                              options=[], value=[], max_items=MAX_SETTINGS, width=420)
        self.corruptions = pn.widgets.MultiChoice(label="Corruptions", options=list(CORRUPTIONS),
                                                  value=list(CORRUPTIONS), width=420)
        self.severities = pn.widgets.MultiChoice(label="Severities", options=[str(s) for s in SEVERITIES],
                                                 value=["1", "3", "5"], width=220)
        self._own_job(JobPanel(dispatch, on_error, run_label="Compare", name="geometry-compare", on_run=lambda: self.run()))
        self.export = ExportMenu("geometry_compare", self._held, on_error=on_error, enabled=False)
        self.note = pn.pane.HTML("", styles=_NOTE, sizing_mode="stretch_width", margin=(4, 10))
        self.pane = pn.pane.DataFrame(None, index=False, sizing_mode="stretch_width", max_height=360)

    def _held(self) -> "pd.DataFrame":
        if self.table is None:
            raise ValueError("no comparison yet: press Compare")
        return self.table

    def set_explorer(self, explorer: "Explorer") -> None:
        """Forget the last comparison; offer ``explorer``'s methods (magnitude, LAMP, random picked)."""
        self.job.cancel()
        self._explorer, self.table = explorer, None
        self.export.set_enabled(False)
        self.pane.object = None
        self.methods.param.update(options=list(explorer.methods),
                                  value=[m for m in DEFAULT_METHODS if m in explorer.methods])

    def settings(self) -> tuple[dict[str, "Setting"], list[str]]:
        """The picked methods at the current sparsity with the current token budget (and what was skipped)."""
        methods = list(self.methods.value)
        if not 1 <= len(methods) <= MAX_SETTINGS:
            raise ValueError(f"pick 1 to {MAX_SETTINGS} methods to compare, got {len(methods)}")
        return method_settings(self._explorer, methods)

    def run(self) -> bool:
        """Start the comparison job; returns whether it started (bad input goes to the alert)."""
        ex = self._explorer
        try:
            settings, skipped = self.settings()
            corruptions = list(self.corruptions.value)
            severities = sorted(int(s) for s in self.severities.value)
            if corruptions and not severities:
                raise ValueError("pick at least one severity (1-5) for the corruptions")
            if not settings:
                raise ValueError(f"none of the methods can run here: {'; '.join(skipped)}")
        except ValueError as err:
            self._on_error(err)
            return False
        self.note.object = html.escape("; ".join(f"skipped {s}" for s in skipped))

        def done(table: "pd.DataFrame") -> None:
            if ex is not self._explorer:
                return
            self.table = table
            self.export.set_enabled(True)
            self.pane.object = table.assign(
                weight_sparsity=[f"{100 * v:.1f} %" for v in table["weight_sparsity"]],
                accuracy=[f"{100 * v:.1f} %" for v in table["accuracy"]],
                mean_angle=[f"{v:.2f}" for v in table["mean_angle"]],
                mean_norm=[f"{v:.3f}" for v in table["mean_norm"]],
                mean_margin=[f"{v:.3f}" for v in table["mean_margin"]],
            )[["setting", "weight_sparsity", "corruption", "severity", "accuracy", "mean_angle", "mean_norm",
               "mean_margin"]]

        return self.job.start(
            lambda progress, cancel: compare_table(ex, settings, corruptions, severities, progress, cancel),
            on_done=done, running_text=f"Comparing {', '.join(settings)} under {len(corruptions)} corruptions…")

    def wait_idle(self, timeout: float = 120.0) -> bool:
        return self.job.wait_idle(timeout)

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.pane.HTML("Accuracy and mean angle / norm / margin of several methods at the current sparsity (and "
                         "token budget), clean and under each corruption.", styles=_NOTE, margin=(4, 10)),
            pn.FlexBox(self.methods, self.corruptions, self.severities, sizing_mode="stretch_width"),
            self.job, self.note, pn.Row(pn.HSpacer(), self.export, sizing_mode="stretch_width"), self.pane,
            sizing_mode="stretch_width")


__all__ = ["CompareSection"]
