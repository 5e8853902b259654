"""The ticket-search controls of the Tickets tab: a :class:`JobPanel` job running
``Explorer.find_ticket`` with live progress per seed and round and overall, and Cancel.

The search runs on the job's worker thread (inline in a notebook kernel); each finished training
reports through ``on_record`` and comes back to the page through the session's dispatcher.
"""

from __future__ import annotations

import html
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import panel as pn

from prunescope.explorer.app.dispatch import SessionDispatcher
from prunescope.explorer.app.job_view import JobPanel
from prunescope.explorer.lottery.prune import check_criterion
from prunescope.explorer.lottery.variants import get_variant
from prunescope.explorer.pruning import METHODS

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.engine import Explorer
    from prunescope.explorer.lottery import TicketRun

_NOTE = {"font-size": "12px", "color": "#4b5563"}
REWIND_LABELS = {"to θ0 (initialisation)": "init", "to θk (early training)": "early", "none (keep trained)": "none"}
VARIANTS = {"IMP (Frankle & Carbin)": "imp", "COLT (overlap of data splits)": "colt", "SWAMP (averaged particles)": "swamp"}


def ticket_criteria() -> dict[str, str]:
    """``{display name: name}`` of the criteria a search can prune with (score-ranking ones)."""
    out = {}
    for name, method in METHODS.items():
        if not method.selectable:
            continue
        try:
            check_criterion(name)
        except ValueError:
            continue
        out[method.display_name] = name
    return out


def parse_seeds(text: str) -> list[int]:
    """``'0, 1, 2'`` -> ``[0, 1, 2]``; a ValueError names bad text (seeds are integers >= 0)."""
    parts = [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p]
    try:
        seeds = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"seeds must be comma-separated integers >= 0, got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise ValueError(f"seeds must be comma-separated integers >= 0, got {text!r}")
    return seeds


def new_run_dir(name: str) -> Path:
    """A fresh run directory for a search of model ``name`` in the user cache (``PRUNESCOPE_CACHE_DIR``)."""
    from platformdirs import user_cache_dir

    root = os.environ.get("PRUNESCOPE_CACHE_DIR") or user_cache_dir("prunescope")
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return Path(root) / "tickets" / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


class SearchProgress:
    """Per seed: levels trained and controls done, from ``find_ticket``'s ``on_record`` events."""

    def __init__(self, seeds: list[int], rounds: int, jobs_per_level: int, controls: bool) -> None:
        self.seeds, self.rounds, self.jobs_per_level, self.controls = seeds, rounds, jobs_per_level, controls
        self.ticket_jobs = {s: 0 for s in seeds}
        self.control_jobs = {s: 0 for s in seeds}

    def record(self, info: dict) -> None:
        seed = info["seed"]
        if info["kind"] == "ticket":
            self.ticket_jobs[seed] = self.ticket_jobs.get(seed, 0) + 1
        else:
            self.control_jobs[seed] = self.control_jobs.get(seed, 0) + 1

    def levels_done(self, seed: int) -> int:
        return self.ticket_jobs.get(seed, 0) // self.jobs_per_level

    @property
    def fraction_of_levels(self) -> float:
        total = len(self.seeds) * (self.rounds + 1)
        return sum(self.levels_done(s) for s in self.seeds) / max(total, 1)

    def lines(self) -> str:
        """One line per seed: the round being trained and the controls finished."""
        out = []
        for s in self.seeds:
            done = self.levels_done(s)
            now = "dense training" if done == 0 else (f"round {done} of {self.rounds}" if done <= self.rounds else "done")
            if done > self.rounds:
                now = "all rounds done"
            ctl = f", controls {self.control_jobs[s]} of {2 * self.rounds}" if self.controls else ""
            out.append(f"seed {s}: {done} of {self.rounds + 1} levels trained ({now}){ctl}")
        return "<br>".join(out)


class SearchSection(pn.viewable.Viewer):
    """Search settings, a Find-tickets job and its progress; ``on_found(explorer, run)`` gets the run."""

    def __init__(self, dispatch: SessionDispatcher, on_error: Callable[[BaseException], None],
                 explorer: Callable[[], "Explorer | None"], on_found: Callable[["Explorer", "TicketRun"], None],
                 on_started: Callable[[Path], None] | None = None) -> None:
        super().__init__()
        self._dispatch, self._on_error, self._explorer = dispatch, on_error, explorer
        self._on_found, self._on_started = on_found, on_started or (lambda path: None)
        criteria = ticket_criteria()
        self.rounds = pn.widgets.IntInput(label="Rounds", value=5, start=1, end=50, width=90)
        self.prune_per_round = pn.widgets.FloatInput(label="Prune per round", value=0.2, start=0.01, end=0.99,
                                                     step=0.05, width=120)
        self.criterion = pn.widgets.Select(label="Criterion", options=criteria, value="global_magnitude"
                                           if "global_magnitude" in criteria.values() else next(iter(criteria.values())),
                                           width=190)
        self.rewind = pn.widgets.Select(label="Rewind", options=REWIND_LABELS, value="init", width=190)
        self.seeds = pn.widgets.TextInput(label="Seeds", value="0, 1", width=100)
        self.epochs = pn.widgets.IntInput(label="Epochs per training", value=5, start=1, end=1000, width=130)
        self.variant = pn.widgets.Select(label="Variant", options=VARIANTS, value="imp", width=220)
        self.controls = pn.widgets.Checkbox(label="Controls (random re-init, random mask)", value=True)
        self.dask = pn.widgets.Checkbox(label="Local Dask cluster (2 worker processes)", value=False)
        self.job = JobPanel(dispatch, on_error, run_label="Find tickets", name="tickets", on_run=self.run)
        self.round_progress = pn.indicators.Progress(value=0, max=100, width=160, visible=False, margin=(5, 10))
        self.seed_lines = pn.pane.HTML("", styles=_NOTE, margin=(0, 10), sizing_mode="stretch_width")
        self.note = pn.pane.HTML("", styles=_NOTE, margin=(0, 10), sizing_mode="stretch_width")
        self.progress_state: SearchProgress | None = None
        self.run_dir: Path | None = None
        self.job.status.param.watch(self._job_status, "object")
        self._layout = pn.Column(
            pn.FlexBox(self.rounds, self.prune_per_round, self.criterion, self.rewind, self.seeds, self.epochs,
                       self.variant, sizing_mode="stretch_width", align_items="end"),
            pn.Row(self.controls, self.dask), self.note, self.job,
            pn.Row(pn.pane.HTML("Levels", styles=_NOTE, margin=(5, 0, 0, 10)), self.round_progress), self.seed_lines,
            sizing_mode="stretch_width",
        )

    def set_explorer(self, explorer: "Explorer") -> None:
        """Say what the search trains on; the model's own recipe decides lr and batch size."""
        config = dict(explorer.sample.train_config) if explorer.sample is not None else {}
        data = explorer.train_data
        self.job.run_button.disabled = data is None or self.job.running
        if data is None:
            self.note.object = (f"<b>{html.escape(explorer.name)}</b> has no training data: build the explorer "
                                "with <code>train_data=(inputs, labels)</code> to search for tickets.")
            return
        recipe = f" (its recipe: {config['epochs']} epochs)" if "epochs" in config else ""
        self.note.object = (f"Trains <b>{html.escape(explorer.name)}</b> on {len(data[1]):,} training samples{recipe}; "
                            "every level is written to a new run directory.")

    def settings(self) -> dict[str, Any]:
        """The ``find_ticket`` keyword arguments the controls show (ValueError on bad input)."""
        return {"rounds": int(self.rounds.value), "prune_per_round": float(self.prune_per_round.value),
                "criterion": self.criterion.value, "rewind": self.rewind.value, "seeds": parse_seeds(self.seeds.value),
                "epochs": int(self.epochs.value), "variant": self.variant.value, "controls": bool(self.controls.value),
                "client": "local" if self.dask.value else None}

    def run(self) -> None:
        """Start the search on the job's worker (bad settings go to the app's alert)."""
        explorer = self._explorer()
        if explorer is None or self.job.running:
            return
        try:
            kwargs = self.settings()
        except ValueError as err:
            self._on_error(err)
            return
        variant = get_variant(kwargs["variant"], 2, 3)
        state = SearchProgress(kwargs["seeds"], kwargs["rounds"], len(variant.jobs(kwargs["seeds"][0], 0)),
                               kwargs["controls"])
        self.progress_state, self.run_dir = state, new_run_dir(explorer.name)
        run_dir = self.run_dir

        def on_record(info: dict) -> None:  # on the worker thread
            self._dispatch(lambda: self._show_record(state, info))

        def search(progress, cancel):
            return explorer.find_ticket(run_dir=run_dir, progress=progress, cancel=cancel, on_record=on_record,
                                        **kwargs)

        text = (f"Searching {kwargs['rounds']} rounds of {kwargs['prune_per_round']:g} with {kwargs['criterion']}, "
                f"seeds {', '.join(map(str, kwargs['seeds']))}{' on a local Dask cluster' if kwargs['client'] else ''}…")
        if self.job.start(search, lambda run: self._finished(explorer, run), text):
            self.round_progress.param.update(value=0, visible=True)
            self.seed_lines.object = state.lines()
            self._on_started(run_dir)

    def _show_record(self, state: SearchProgress, info: dict) -> None:
        if state is not self.progress_state:
            return
        state.record(info)
        self.round_progress.value = int(round(100 * state.fraction_of_levels))
        self.seed_lines.object = state.lines()

    def _job_status(self, event: Any) -> None:
        """The job failed or was cancelled: hide the level bar and name the partial run."""
        text = str(event.new or "")
        if not (text.startswith("Cancelled") or text.startswith("Failed")):
            return
        self.round_progress.visible = False
        if self.run_dir is not None and (self.run_dir / "run.json").is_file():
            self.seed_lines.object = (f"{self.seed_lines.object}<br>The levels finished so far are in "
                                      f"<code>{html.escape(str(self.run_dir))}</code> (load it below).")

    def _finished(self, explorer: "Explorer", run: "TicketRun") -> None:
        self.round_progress.visible = False
        self.job.status.object = f"Found: {html.escape(str(run.path))}"
        self._on_found(explorer, run)

    def cancel(self) -> None:
        self.job.cancel()

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout
