"""The Tickets tab: find or load a lottery-ticket run, use one level's ticket as the pruning
setting, and compare masks (overlap matrix, per-layer overlap, weight overlay, accuracy).

Every table comes from :mod:`prunescope.explorer.lottery.figures` (the registered figures'
tables), computed on this tab's worker thread: one-shot criteria (SNIP's backward pass) and the
current setting's masks never run on the event loop. "Use this ticket" calls
``Explorer.prune('ticket', run=..., level=k, run_seed=s)``; every tab then shows that ticket.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pandas as pd
import panel as pn

from prunescope.explorer.app.dispatch import SessionDispatcher, session_callback
from prunescope.explorer.app.tickets_view.plots import AccuracyChart, OverlapByLayerChart, OverlapHeatmap, OverlayImage
from prunescope.explorer.app.tickets_view.search import SearchSection
from prunescope.explorer.figures.data import method_label
from prunescope.explorer.lottery.figures import (
    CRITERIA, criterion_label, default_selection, jackpots, mask_overlay_table, mask_sources,
    overlap_by_layer_table, overlap_matrix_table, resolve_masks, run_attrs, run_for, ticket_accuracy_table,
    ticket_label,
)
from prunescope.explorer.pruning.ticket import ticket_reference
from prunescope.explorer.viewmodel import percent
from prunescope.explorer.worker import LatestWorker

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.engine import Explorer
    from prunescope.explorer.lottery import TicketRun

_NOTE = {"font-size": "12px", "color": "#4b5563"}
_HEAD = {"font-size": "14px", "font-weight": "600"}


@dataclass(frozen=True)
class Selection:
    """What the views show (hashable: a change of any part recomputes them)."""

    seed: int
    level: int
    labels: tuple[str, ...]
    layer: str
    versus: str
    overlay_a: str
    overlay_b: str
    overlay_layer: str


def compute_tables(explorer: "Explorer", run: "TicketRun", sel: Selection) -> dict[str, Any]:
    """Every table the tab draws (on the worker thread): the four figures' and the Jackpots check."""
    labels = list(dict.fromkeys(sel.labels))
    masks = resolve_masks(explorer, run, labels, sel.level, sel.seed)
    pair = resolve_masks(explorer, run, [sel.overlay_a, sel.overlay_b], sel.level, sel.seed)
    return {
        "matrix": run_attrs(overlap_matrix_table(masks, sel.layer), run),
        "jackpots": jackpots(explorer, run, sel.level, sel.seed),
        "by_layer": overlap_by_layer_table(explorer, run, sel.versus, sel.seed),
        "overlay": run_attrs(mask_overlay_table(pair[sel.overlay_a], pair[sel.overlay_b], sel.overlay_layer,
                                                sel.overlay_a, sel.overlay_b), run),
        "accuracy": ticket_accuracy_table(run),
    }


class TicketsView(pn.viewable.Viewer):
    """Search, load, use and compare lottery tickets of the current explorer (see the module doc).

    ``set_explorer(explorer)`` switches model (each keeps its own run for the session);
    ``refresh()`` (called by the app while the tab is visible) recomputes the views when the run,
    the selection or the setting changed.
    """

    def __init__(self, dispatch: SessionDispatcher, on_error: Callable[[BaseException], None],
                 clear_error: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._dispatch, self._on_error = dispatch, on_error
        self._clear_error = clear_error or (lambda: None)
        self._explorer: Explorer | None = None
        self._runs: dict[int, TicketRun] = {}
        self.run: TicketRun | None = None
        self.tables: dict[str, Any] = {}
        self._syncing = False
        self._requested: tuple | None = None
        self._shown: tuple | None = None
        self._load_worker = LatestWorker(name="prunescope-tickets-load")
        self._views_worker = LatestWorker(name="prunescope-tickets-views")

        self.search = SearchSection(dispatch, on_error, lambda: self._explorer, on_found=self._set_run,
                                    on_started=lambda path: setattr(self.run_path, "value", str(path)))
        self.run_path = pn.widgets.TextInput(label="Run directory", placeholder="directory of a ticket search "
                                             "(prunescope ticket --out DIR, or ex.find_ticket)", width=460)
        self.load_button = pn.widgets.Button(label="Load run", width=110, margin=(24, 10, 5, 10))
        self.run_info = pn.pane.HTML("No run yet: find tickets above or load a run directory.", styles=_NOTE,
                                     margin=(0, 10), sizing_mode="stretch_width")
        self.levels = pn.pane.DataFrame(None, index=False, sizing_mode="stretch_width", max_height=260)
        self.seed = pn.widgets.Select(label="Ticket of seed", options=[], width=140)
        self.level = pn.widgets.Select(label="Reference level (criteria prune to its sparsity)", options=[], width=300)
        self.use_box = pn.FlexBox(sizing_mode="stretch_width")
        self.use_buttons: dict[int, pn.widgets.Button] = {}
        self.masks = pn.widgets.MultiChoice(label="Masks compared", options=[], value=[], sizing_mode="stretch_width")
        self.layer = pn.widgets.Select(label="Weights", options=["overall"], value="overall", width=200)
        self.versus = pn.widgets.Select(label="Per-layer overlap of", options={}, width=260)
        self.overlay_a = pn.widgets.Select(label="Mask A", options=[], width=240)
        self.overlay_b = pn.widgets.Select(label="Mask B", options=[], width=240)
        self.overlay_layer = pn.widgets.Select(label="Layer", options=[], width=200)
        self.jackpots_note = pn.pane.HTML("", styles=_NOTE, margin=(0, 10), sizing_mode="stretch_width")
        self.heatmap, self.by_layer = OverlapHeatmap(on_error), OverlapByLayerChart(on_error)
        self.overlay, self.accuracy = OverlayImage(on_error), AccuracyChart(on_error)
        self.sections = pn.Tabs(
            ("Overlap matrix", pn.Column(pn.FlexBox(self.masks, self.layer, sizing_mode="stretch_width"),
                                         self.jackpots_note, self.heatmap, sizing_mode="stretch_width")),
            ("Overlap by layer", pn.Column(self.versus, self.by_layer, sizing_mode="stretch_width")),
            ("Overlay", pn.Column(pn.FlexBox(self.overlay_a, self.overlay_b, self.overlay_layer),
                                  self.overlay, sizing_mode="stretch_width")),
            ("Accuracy", self.accuracy), dynamic=False, sizing_mode="stretch_width",
        )
        self.run_box = pn.Column(self.levels, pn.FlexBox(self.seed, self.level, sizing_mode="stretch_width"),
                                 pn.pane.HTML("<b>Use this ticket</b> (every tab then shows it)", margin=(0, 10),
                                              styles={"font-size": "13px"}),
                                 self.use_box, self.sections, sizing_mode="stretch_width", visible=False)
        self._layout = pn.Column(
            pn.pane.HTML("Find tickets", styles=_HEAD, margin=(8, 10, 0, 10)), self.search,
            pn.pane.HTML("Ticket run", styles=_HEAD, margin=(12, 10, 0, 10)),
            pn.Row(self.run_path, self.load_button), self.run_info, self.run_box, sizing_mode="stretch_width",
        )
        self.load_button.on_click(session_callback(lambda event: self.load()))
        self.seed.param.watch(self._guarded(lambda e: self._seed_changed()), "value")
        for w in (self.level, self.masks, self.layer, self.versus, self.overlay_a, self.overlay_b, self.overlay_layer):
            w.param.watch(self._guarded(lambda e: self.refresh()), "value")

    def _guarded(self, callback: Callable[[Any], None]):
        def run(event: Any) -> None:
            if not self._syncing:
                callback(event)
        return run

    # ------------------------------------------------------------------ explorer and run
    @property
    def explorer(self) -> "Explorer | None":
        return self._explorer

    def set_explorer(self, explorer: "Explorer") -> None:
        """Show ``explorer`` and the run this session found or loaded for it, if any."""
        self._explorer = explorer
        self.search.set_explorer(explorer)
        self._show_run(self._runs.get(id(explorer)))

    def load(self, path: str | None = None) -> None:
        """Load the run directory ``path`` (default: the text field) off the event loop; one that is
        not a run, is corrupt or belongs to another model goes to the app's alert, nothing changes."""
        explorer = self._explorer
        text = (self.run_path.value if path is None else str(path)).strip()
        if explorer is None:
            return
        if not text:
            self._on_error(ValueError("type the directory of a ticket run to load"))
            return
        self.run_info.object = f"Loading <code>{html.escape(text)}</code>…"

        def failed(err: BaseException) -> None:
            self._show_run_info()
            self._on_error(err)

        self._dispatch.submit(self._load_worker, lambda: run_for(explorer, text),
                              on_done=lambda run: self._set_run(explorer, run), on_error=failed)

    def _set_run(self, explorer: "Explorer", run: "TicketRun") -> None:
        self._runs[id(explorer)] = run
        if explorer is self._explorer:
            self._clear_error()
            self._show_run(run)
            self.refresh()

    def _show_run(self, run: "TicketRun | None") -> None:
        """Controls for ``run`` (options follow its seeds, levels and weights)."""
        self.run, self._shown, self._requested = run, None, None
        self.run_box.visible = run is not None
        if run is None:
            for chart in (self.heatmap, self.by_layer, self.overlay, self.accuracy):
                chart.clear()
            self.jackpots_note.object = ""
            self._show_run_info()
            return
        weights = list(run.config.get("prunable") or self._explorer.weights)
        seeds = [s for s in run.seeds if run.completed_levels(s)]
        sources = list(mask_sources(run, CRITERIA, current=True))
        versus = ({"tickets of different seeds": "seeds"} if len(run.seeds) > 1 else {})
        versus.update({f"{method_label(m)} one-shot mask": m for m in CRITERIA})
        self._syncing = True
        try:
            self.run_path.value = str(run.path or "")
            self.seed.param.update(options=seeds, value=seeds[0])
            self._level_options()
            self.masks.param.update(options=sources, value=default_selection(run, -1))
            self.layer.param.update(options=["overall", *weights], value="overall")
            self.versus.param.update(options=versus, value=next(iter(versus.values())))
            self.overlay_a.param.update(options=sources, value=ticket_label(seeds[0], run.completed_levels(seeds[0])[-1]))
            self.overlay_b.param.update(options=sources, value=criterion_label("global_magnitude"))
            largest = max(weights, key=lambda n: self._explorer.dense_weights[n].numel())
            self.overlay_layer.param.update(options=weights, value=largest)
        finally:
            self._syncing = False
        self._use_buttons()
        self._show_run_info()

    def _level_options(self) -> None:
        done = self.run.completed_levels(self.seed.value)
        self.level.param.update(options={self._level_text(lv): lv for lv in done}, value=done[-1])

    def _level_text(self, level: int) -> str:
        rec = self.run.record(level, self.seed.value)
        return f"level {level}: {percent(rec.metrics['sparsity'])} sparse, accuracy {percent(rec.metrics['accuracy'])}"

    def _seed_changed(self) -> None:
        self._syncing = True
        try:
            self._level_options()
            self.overlay_a.value = ticket_label(self.seed.value, self.level.value)
        finally:
            self._syncing = False
        self._use_buttons()
        self.refresh()

    def _show_run_info(self) -> None:
        run = self.run
        if run is None:
            self.run_info.object = "No run yet: find tickets above or load a run directory."
            self.levels.object = None
            return
        c = run.config
        state = "complete" if run.complete else "partial (interrupted or still running)"
        self.run_info.object = (
            f"<code>{html.escape(str(run.path))}</code>: {c['model']['name']}, {c.get('variant', 'imp')}, "
            f"{c['rounds']} rounds of {c['prune_per_round']:g} by {c['criterion']}, rewind {c['rewind']}, "
            f"{c['epochs']} epochs, seeds {', '.join(map(str, run.seeds))}; {state}.")
        table = run.metrics().pivot_table(index=["seed", "level"], columns="kind", values="accuracy").reset_index()
        sparsity = run.metrics().query("kind == 'ticket'").set_index(["seed", "level"])["sparsity"]
        rows = {"seed": table["seed"], "level": table["level"],
                "sparsity": [percent(sparsity.get((s, lv), float("nan"))) for s, lv in zip(table["seed"], table["level"])]}
        for kind, title in (("ticket", "ticket accuracy"), ("reinit", "random re-init"), ("random", "random mask")):
            if kind in table:
                rows[title] = [percent(v) if v == v else "–" for v in table[kind]]
        self.levels.object = pd.DataFrame(rows)

    # ------------------------------------------------------------------ using a ticket
    def _use_buttons(self) -> None:
        seed = self.seed.value
        self.use_buttons = {}
        for level in self.run.completed_levels(seed):
            rec = self.run.record(level, seed)
            button = pn.widgets.Button(label=f"Use level {level} ({percent(rec.metrics['sparsity'])} sparse)",
                                       width=210, margin=(4, 10))
            button.on_click(session_callback(lambda event, level=level: self.use_ticket(level)))
            self.use_buttons[level] = button
        self.use_box.objects = list(self.use_buttons.values())
        self._mark_used()

    def used_ticket(self) -> tuple[int, int] | None:
        """``(seed, level)`` of this run's ticket the current setting uses, or None."""
        ex, run = self._explorer, self.run
        ref = ticket_reference(ex.setting.weights) if ex is not None else None
        if ref is None or run is None or run.path is None:
            return None
        path, level, run_seed = ref
        if Path(path).resolve() != Path(run.path).resolve():
            return None
        try:
            rec = run.record(level, None if run_seed < 0 else run_seed)
        except ValueError:
            return None
        return rec.seed, rec.level

    def _mark_used(self) -> None:
        used = self.used_ticket()
        for level, button in self.use_buttons.items():
            button.button_type = "primary" if used == (self.seed.value, level) else "default"

    def use_ticket(self, level: int, seed: int | None = None) -> bool:
        """Make the ticket of ``seed`` (default: the chosen one) at ``level`` the pruning setting."""
        run, ex = self.run, self._explorer
        seed = self.seed.value if seed is None else seed
        try:
            ex.prune("ticket", run=str(run.path), level=int(level), run_seed=int(seed))
        except Exception as err:  # noqa: BLE001 - ValueError is bad input (e.g. a file damaged since loading)
            self._on_error(err)
            return False
        self._clear_error()
        self._mark_used()
        return True

    # ------------------------------------------------------------------ views
    def selection(self) -> Selection:
        """The views' selection as the controls show it."""
        return Selection(int(self.seed.value), int(self.level.value), tuple(self.masks.value), self.layer.value,
                         self.versus.value, self.overlay_a.value, self.overlay_b.value, self.overlay_layer.value)

    def refresh(self) -> None:
        """Recompute the views on the worker if the run, the selection or the setting changed."""
        ex, run = self._explorer, self.run
        if ex is None or run is None:
            return
        self._mark_used()
        sel = self.selection()
        if not sel.labels:
            self.heatmap.clear("Pick at least one mask to compare.")
        key = (id(ex), id(run), sel, ex.setting)
        if key in (self._shown, self._requested):
            return
        self._requested = key
        if not sel.labels:
            sel = Selection(**{**sel.__dict__, "labels": (ticket_label(sel.seed, sel.level),)})

        def failed(err: BaseException) -> None:
            if self._requested == key:
                self._requested = None
            self._on_error(err)

        self._dispatch.submit(self._views_worker, lambda: compute_tables(ex, run, sel),
                              on_done=lambda tables: self._show_tables(key, tables), on_error=failed)

    def _show_tables(self, key: tuple, tables: dict[str, Any]) -> None:
        if key != self._requested:
            return
        self._shown, self._requested, self.tables = key, None, tables
        if self.masks.value:
            self.heatmap.show(tables["matrix"])
        self.by_layer.show(tables["by_layer"])
        self.overlay.show(tables["overlay"])
        self.accuracy.show(tables["accuracy"])
        self.jackpots_note.object = self._jackpots_text(tables["jackpots"])

    def _jackpots_text(self, table) -> str:
        seed, level = table.attrs["seed"], table.attrs["level"]
        best = table.iloc[0]
        items = ", ".join(f"{r.label} {r.jaccard:.3f} ({r.ratio:.2f}× random)" for r in table.itertuples())
        return (f"<b>Jackpots check</b>: the one-shot mask closest to the ticket of seed {seed}, level {level} "
                f"({percent(float(best.sparsity))} sparse) is <b>{best.label}</b> (Jaccard {best.jaccard:.3f}, random "
                f"masks {best.random_jaccard:.3f}). All: {items}.")

    # ------------------------------------------------------------------ lifecycle
    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until the search, loading and the views are idle (tests and scripts)."""
        return (self.search.job.wait_idle(timeout) and self._load_worker.wait_idle(timeout)
                and self._views_worker.wait_idle(timeout))

    def close(self) -> None:
        """Stop the search and the workers (session ended)."""
        self.search.job.close()
        self._load_worker.close()
        self._views_worker.close()

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout
