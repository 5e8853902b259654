"""``ExplorerApp``: one browser session of Prunescope (``panel serve explorer``)."""

from __future__ import annotations

import contextlib
import logging
from functools import partial
from typing import TYPE_CHECKING, Any, Callable

import panel as pn
import param

from prunescope.explorer.app.backends import evaluation_backends, warmup_for
from prunescope.explorer.app.controls import GLOBAL, Controls
from prunescope.explorer.app.dispatch import SessionDispatcher, session_callback
from prunescope.explorer.app.geometry_view import GeometryView
from prunescope.explorer.app.io_view import FilesCard
from prunescope.explorer.app.metrics_view import MetricsPanel
from prunescope.explorer.app.palette import ACCENT
from prunescope.explorer.app.plots import LayerSparsityChart, MaskView
from prunescope.explorer.app.sensitivity_view import SensitivityView
from prunescope.explorer.app.speed_view import SpeedView
from prunescope.explorer.app.tickets_view import TicketsView
from prunescope.explorer.app.tokens_view import TokensView
from prunescope.explorer.pruning import get_method
from prunescope.explorer.viewmodel import view_model
from prunescope.explorer.worker import LatestWorker

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.engine import Explorer
    from prunescope.explorer.core.cost import Metrics
    from prunescope.explorer.core.setting import Setting
    from prunescope.explorer.models import ModelEntry

log = logging.getLogger(__name__)
_STATE_PARAMS = ["setting", "backend"]
#: Frame budget of the progressive estimate shown while a slider moves, in seconds.
ESTIMATE_SECONDS = 0.1


class ExplorerApp(pn.viewable.Viewer):
    """The explorer for one session: the sidebar writes the state of the chosen model's
    :class:`~prunescope.explorer.Explorer`; every state change redraws the instant views and asks
    the session's worker to measure accuracy and loss (the latest request wins).

    Each model gets its own Explorer, built on first use and kept for the session.
    """

    model_name = param.String(default="digits_mlp", doc="The sample model being explored.")

    def __init__(self, model: str | None = "digits_mlp", models: "dict[str, ModelEntry] | None" = None,
                 explorer: "Explorer | None" = None, max_upload_bytes: int | None = None, **params: Any) -> None:
        from prunescope.explorer.models import ModelEntry, sample_entries

        entries = dict(models) if models is not None else sample_entries()
        if explorer is not None:  # ex.show() / ex.serve(): this explorer first, under its own name
            entries = {explorer.name: ModelEntry(explorer.name, "this notebook's explorer", lambda: explorer,
                                                 "notebook"), **{k: v for k, v in entries.items() if k != explorer.name}}
            model = explorer.name
        if not entries:
            raise ValueError("the app needs at least one model")
        if model not in entries:
            if models is None and explorer is None:
                raise ValueError(f"unknown model {model!r}; known: {', '.join(entries)}")
            model = next(iter(entries))
        super().__init__(model_name=model, **params)
        self._entries = entries
        self.max_upload_bytes = max_upload_bytes
        models = list(entries)
        self._dispatch = SessionDispatcher()
        self._worker = LatestWorker(name="prunescope-evaluate")
        self._explorers: dict[str, Explorer] = {}
        self._explorer: Explorer | None = None
        self._syncing = False
        self._free_sparsity = 0.0
        self._drag = False
        # (explorer id, spec, backend) being measured, and the one on the cards now
        self._requested: tuple[int, Setting, str] | None = None
        self._shown: tuple[int, Setting, str] | None = None

        self.controls = Controls(models, model, evaluation_backends())
        self.metrics = MetricsPanel()
        self.layer_chart = LayerSparsityChart(explorer=lambda: self._explorer, on_error=self.show_error)
        self.mask_view = MaskView(explorer=lambda: self._explorer, on_error=self.show_error)
        self.sensitivity = SensitivityView(self._dispatch, on_error=self.show_error)
        self.speed = SpeedView(self._dispatch, on_error=self.show_error)
        self.alert = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width")
        self.files = FilesCard(self._dispatch, on_error=self.show_error, on_warning=self.show_warning,
                               on_weights=self.use_explorer, max_upload_bytes=max_upload_bytes)
        #: Tabs added by the areas (tokens, geometry, tickets): ``(title, view)``; each view has
        #: ``set_explorer(explorer)`` and ``refresh()``, called only while its tab is visible.
        self.extra_tabs: list[tuple[str, Any]] = []
        # Tokens: every model gets the tab; one without transformer blocks shows a note there
        self.tokens = TokensView(self._dispatch, on_error=self.show_error,
                                 clear_error=lambda: setattr(self.alert, "visible", False))
        self.extra_tabs.append(("Tokens", self.tokens))
        # Geometry: how the pruning moves the feature space (embedding, CKA, robustness geometry)
        self.geometry = GeometryView(self._dispatch, on_error=self.show_error,
                                     clear_error=lambda: setattr(self.alert, "visible", False))
        self.extra_tabs.append(("Geometry", self.geometry))
        # Tickets: find, load and use lottery tickets, compare their masks
        self.tickets = TicketsView(self._dispatch, on_error=self.show_error,
                                   clear_error=lambda: setattr(self.alert, "visible", False))
        self.extra_tabs.append(("Tickets", self.tickets))
        self.tabs = self._build_tabs()
        self.tabs.param.watch(session_callback(self._on_tab), "active")
        self._wire()
        self._select_model(model)
        self._dispatch.on_destroyed(self.close)

    # ------------------------------------------------------------------------------ wiring
    def _wire(self) -> None:
        c = self.controls
        c.model.param.watch(self._guarded(lambda e: self._select_model(e.new)), "value")
        c.method.param.watch(self._guarded(self._on_method), "value")
        c.sparsity.param.watch(self._guarded(self._on_sparsity), "value")
        c.sparsity.param.watch(self._guarded(lambda e: self._request_evaluation(full=True)), "value_throttled")
        c.seed.param.watch(self._guarded(lambda e: self._prune_from_controls()), "value")
        c.backend.param.watch(self._guarded(lambda e: self._apply(lambda ex: ex.state.param.update(backend=e.new))),
                              "value")
        self.mask_view.layer_select.param.watch(self._guarded(lambda e: self._refresh_mask()), "value")

    def _guarded(self, callback: Callable[[param.parameterized.Event], None]):
        """A widget callback that ignores changes made while the widgets are being synced."""

        @session_callback
        def run(event: param.parameterized.Event) -> None:
            if not self._syncing:
                callback(event)

        return run

    # ------------------------------------------------------------------------------ public
    @property
    def explorer(self) -> "Explorer":
        """The Explorer of the model shown now (its ``state`` is what the sidebar shows)."""
        return self._explorer

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until the evaluation worker is idle (tests, scripts); outside a server its result
        has then been shown, in a served session it is queued on the session's event loop."""
        return self._worker.wait_idle(timeout)

    def show_error(self, err: BaseException) -> None:
        """Show ``err`` in the alert above the results; the session keeps running. Anything but bad
        input (a ValueError) is also logged with its traceback: it is a bug to be seen."""
        if not isinstance(err, ValueError):
            log.error("error shown in the alert", exc_info=(type(err), err, err.__traceback__))
        self.alert.object = f"**Not applied:** {err}" if isinstance(err, ValueError) else f"**Error:** {err!r}"
        self.alert.param.update(alert_type="danger", visible=True)

    def show_warning(self, text: str) -> None:
        """Show ``text`` in the alert as a warning (e.g. a recipe made for other weights)."""
        self.alert.param.update(object=text, alert_type="warning", visible=True)

    def use_explorer(self, explorer: "Explorer") -> None:
        """Show ``explorer`` for the current model in this session only (e.g. built from uploaded
        weights by the Files card); other sessions and the model entries are untouched."""
        explorer.state.param.watch(partial(self._on_state, explorer), _STATE_PARAMS)
        self._explorers[self.model_name] = explorer
        self._explorer, self._shown, self._requested = explorer, None, None  # its setting came with it
        self._select_model(self.model_name)

    def close(self) -> None:
        """Stop this session's compute threads (called when the browser session ends)."""
        self._dispatch.close()
        self.sensitivity.close()
        self.speed.close()
        self.files.close()
        for _title, view in self.extra_tabs:
            if hasattr(view, "close"):
                view.close()
        self._worker.close()

    # ------------------------------------------------------------------------------ changes
    def _apply(self, change: Callable[["Explorer"], Any], explorer: "Explorer | None" = None) -> bool:
        """Run ``change(explorer)``; bad input (or any engine error) shows an alert and the widgets
        go back to the state, so the session never breaks."""
        try:
            change(explorer or self._explorer)
        except Exception as err:  # noqa: BLE001 - ValueError is bad input; anything else is shown too
            self.show_error(err)
            if self._explorer is not None:
                self._sync_controls()
            return False
        self.alert.visible = False
        return True

    def _prune_from_controls(self, method_changed: bool = False) -> None:
        """Prune with exactly what the controls show (a new method starts at its own defaults)."""
        c = self.controls
        method = c.method.value
        options = {} if method_changed else c.option_values()
        if method_changed and get_method(method).uses_seed:
            options["seed"] = c.seed.value
        free = self._free_sparsity if method_changed else c.sparsity.value

        def prune(ex: "Explorer") -> None:  # inside _apply: bad options become an alert
            strategy = get_method(method)
            fixed = strategy.fixed_sparsity(dict(strategy.check_options(
                {k: v for k, v in options.items() if k != "seed"})))
            ex.prune(method, sparsity=None if fixed is not None else free, **options)

        self._apply(prune)

    def _on_method(self, event: param.parameterized.Event) -> None:
        self._prune_from_controls(method_changed=True)

    def _on_sparsity(self, event: param.parameterized.Event) -> None:
        if self._dispatch.in_kernel and self.controls.is_echo(GLOBAL, event.new):
            self._sync_controls()  # a notebook page's echo of an earlier draw (see Controls.is_echo)
            return
        self._free_sparsity = event.new
        with self._dragging():
            self._prune_from_controls()
        self._resend_if_crossed(GLOBAL)

    @contextlib.contextmanager
    def _quiet(self):
        """Changes made to the widgets inside do not reach their callbacks (the app's own draws)."""
        self._syncing = True
        try:
            yield
        finally:
            self._syncing = False

    @contextlib.contextmanager
    def _dragging(self):
        """While a slider moves, state changes ask for the progressive estimate, not the full split."""
        self._drag = True
        try:
            yield
        finally:
            self._drag = False

    def _set_layer(self, layer: str, event: param.parameterized.Event) -> None:
        """One per-weight slider moved (``value``) or was released (``value_throttled``)."""
        if self._syncing:
            return
        if event.name == "value_throttled":
            self._request_evaluation(full=True)
            return
        if self._dispatch.in_kernel and self.controls.is_echo(layer, event.new):
            self._sync_controls()  # a notebook page's echo of an earlier draw: show the state again
            return
        with self._dragging():
            self._apply(lambda ex: ex.set_layer_sparsity(layer, event.new))
        self._resend_if_crossed(layer)

    def _resend_if_crossed(self, name: str) -> None:
        """On a served page, a user's move of a slider the server drew lately is answered with the
        server's value a tick later (see :meth:`Controls.resend`)."""
        if self._dispatch.served and self.controls.drawn_lately(name):
            self._dispatch(partial(self._resend, name))

    def _resend(self, name: str) -> None:
        with self._quiet():
            self.controls.resend(name)

    def _select_model(self, name: str) -> None:
        """Show model ``name``, building its Explorer on first use with the sidebar's settings."""
        previous = self._explorer
        if name not in self._explorers:
            try:
                explorer = self._build_explorer(name)
            except Exception as err:  # noqa: BLE001 - a user's factory may fail in any way
                self.show_error(ValueError(f"could not build model {name!r}: {err}"))
                if self._explorer is not None:
                    with self._quiet():
                        self.controls.model.value = self._explorer.name
                return
            explorer.state.param.watch(partial(self._on_state, explorer), _STATE_PARAMS)
            self._explorers[name] = explorer
        explorer = self._explorers[name]
        if previous is not None and previous is not explorer:
            w = previous.setting.weights  # carry the global setting over; hand-set weights belong to a model
            try:
                explorer.prune(w.method, sparsity=w.sparsity, seed=w.seed, **dict(w.options))
            except ValueError:
                pass  # e.g. a ticket of the other model: this one keeps its own setting
            explorer.state.backend = previous.state.backend
        self.model_name = name
        self._explorer = explorer
        sliders = self.controls.set_layers(explorer.layers)
        for layer, slider in sliders.items():
            # One watcher per parameter: a key press changes value and value_throttled in one batch.
            slider.param.watch(session_callback(partial(self._set_layer, layer)), "value")
            slider.param.watch(session_callback(partial(self._set_layer, layer)), "value_throttled")
        largest = max(explorer.profile.weights, key=lambda info: info.numel).name
        with self._quiet():
            self.mask_view.layer_select.param.update(options=explorer.layers, value=largest)
        self.sensitivity.set_explorer(explorer)
        self.speed.set_explorer(explorer)
        self.files.set_explorer(explorer)
        for _title, view in self.extra_tabs:
            view.set_explorer(explorer)
        self._refresh()

    def _build_explorer(self, name: str) -> "Explorer":
        """The Explorer of model entry ``name`` (a sample, a plug-in or a ``--model`` factory)."""
        return self._entries[name].build()

    def _on_state(self, explorer: "Explorer", *events: param.parameterized.Event) -> None:
        if explorer is self._explorer:
            self._refresh()

    # ------------------------------------------------------------------------------ views
    def _sync_controls(self) -> None:
        vm = view_model(self._explorer)
        with self._quiet():
            if self.controls.options_changed(vm):
                for widget in self.controls.build_options(vm).values():
                    widget.param.watch(self._guarded(lambda e: self._prune_from_controls()), "value")
            self.controls.show(self._explorer, vm)

    def _refresh(self) -> None:
        """Redraw what is instant (sidebar, cost, bars, mask) and ask for a new evaluation.

        A criterion's first scores (SNIP's backward pass, a channel trace) are computed on the
        worker, never on the event loop; the views are redrawn when they arrive."""
        explorer = self._explorer
        if not explorer.masks_ready():
            setting = explorer.setting
            self.metrics.set_pending(True, f"computing {get_method(setting.weights.method).display_name} scores")
            self._dispatch.submit(
                self._worker, lambda: explorer.masks_for(setting),
                on_done=lambda masks: self._refresh() if explorer is self._explorer else None,
                on_error=self.show_error,
            )
            return
        self._sync_controls()
        cost = explorer.cost()
        self.metrics.show_cost(cost)
        self.layer_chart.update(cost.per_layer, set(explorer.state.layer_sparsity))
        self._refresh_mask(cost)
        self.sensitivity.mark(explorer.state.method, dict(zip(cost.per_layer["layer"], cost.per_layer["sparsity"])))
        self.speed.mark()
        self._refresh_extra_tabs()
        self._request_evaluation(full=not self._drag)

    def _refresh_mask(self, cost=None) -> None:
        explorer = self._explorer
        layer = self.mask_view.layer_select.value
        if layer not in explorer.layers:
            return
        cost = cost or explorer.cost()
        kept = int(cost.per_layer.set_index("layer").loc[layer, "kept"])
        self.mask_view.update(explorer.masks[layer], explorer.profile[layer], kept)

    def _request_evaluation(self, full: bool = True) -> None:
        """Measure the current setting on the worker; the newest request wins, stale results are dropped.

        While a slider moves (``full=False``) the job is the progressive estimate on a subset that
        fits the frame budget (the full split for small models); on release, the full split. On a
        Numba backend the job first waits (on the worker thread) for the kernels' warm-up;
        meanwhile the accuracy card says so and every control stays live."""
        explorer = self._explorer
        spec, backend = explorer.setting, explorer.state.backend
        full = full or backend != "torch"
        key = (id(explorer), spec, backend, full)
        if key == self._shown:  # e.g. dragged away and back: drop what is still on its way
            self._requested = None
            self.metrics.set_pending(False)
            return
        if key == self._requested:
            return
        self._requested = key
        warming = warmup_for(backend)
        compiling = warming is not None and not warming.done()
        self.metrics.set_pending(True, f"waiting for the {backend} kernels to compile" if compiling else "")

        def job() -> tuple["Metrics", "Metrics"]:
            if warming is not None:
                warming.result()  # re-raises a failed compile, shown in the alert
            measured = (explorer.evaluate(backend=backend, setting=spec) if full
                        else explorer.estimate(ESTIMATE_SECONDS, setting=spec))
            return explorer.dense_metrics(), measured

        self._dispatch.submit(
            self._worker, job,
            on_done=lambda result: self._show_evaluation(key, explorer, *result),
            on_error=lambda err: self._evaluation_failed(key, err),
        )

    def _show_evaluation(self, key: tuple[int, "Setting", str], explorer: "Explorer",
                         dense: "Metrics", metrics: "Metrics") -> None:
        if explorer is not self._explorer or key[:3] != (id(explorer), explorer.setting, explorer.state.backend):
            return  # a newer setting is on its way
        self._shown = key
        self._requested = None
        self.metrics.show_dense(dense)
        self.metrics.show_metrics(metrics, backend=key[2])
        self.sensitivity.mark_measured(metrics)
        if metrics.estimate and not self._drag:
            # A subset's estimate never stays on the cards: the full split follows (a slider's
            # release may never come, e.g. after key presses or a change made from code).
            self._request_evaluation(full=True)

    def _evaluation_failed(self, key: tuple[int, "Setting", str], err: BaseException) -> None:
        if key == self._requested:
            self._requested = None
            self.metrics.set_pending(False)
        self.show_error(err)

    # ------------------------------------------------------------------------------ layout
    def _main(self) -> list[pn.viewable.Viewable]:
        """The cards and the alert above the tabs (they concern every tab), then the tabs."""
        return [self.metrics, self.alert, self.tabs]

    def _build_tabs(self) -> pn.Tabs:
        def note(text: str) -> pn.pane.HTML:
            return pn.pane.HTML(text, margin=(6, 10, 0, 10), styles={"font-size": "13px", "color": "#374151"})

        pruning = pn.Column(
            pn.FlexBox(self.layer_chart, self.mask_view, sizing_mode="stretch_width"), sizing_mode="stretch_width",
        )
        tabs = [
            ("Pruning", pruning),
            ("Sensitivity", pn.Column(note("Measured accuracy when pruning more, per method and per weight."),
                                      self.sensitivity, sizing_mode="stretch_width")),
            ("Speed", pn.Column(note("Measured latency of the sparse kernels against dense torch, beside the "
                                     "FLOPs reduction."), self.speed, sizing_mode="stretch_width")),
        ]
        tabs += [(title, view) for title, view in self.extra_tabs]
        return pn.Tabs(*tabs, sizing_mode="stretch_width", dynamic=True)

    @property
    def active_tab(self) -> str:
        """The title of the visible tab."""
        return self.tabs._names[self.tabs.active] if self.tabs._names else ""

    def _on_tab(self, event: param.parameterized.Event) -> None:
        """Only the visible tab computes: a tab shown again catches up with the setting."""
        self._refresh_extra_tabs()

    def _refresh_extra_tabs(self) -> None:
        active = self.active_tab
        for title, view in self.extra_tabs:
            if title == active and hasattr(view, "refresh"):
                view.refresh()

    def template(self) -> pn.template.BootstrapTemplate:
        """The served page: Panel's BootstrapTemplate, whose CSS and JS Panel bundles and serves
        itself (FastListTemplate's design pulls a Google web font, so it fails offline)."""
        # One root per area: Bokeh re-walks the whole document for every root added.
        return pn.template.BootstrapTemplate(
            title="Prunescope", sidebar=[pn.Column(*self.controls.widgets(), self.files, sizing_mode="stretch_width")],
            main=[pn.Column(*self._main(), sizing_mode="stretch_width")],
            header_background=ACCENT, header_color="#ffffff", sidebar_width=330,
        )

    def servable(self, title: str | None = None, **kwargs: Any) -> pn.template.BootstrapTemplate:
        """Serve the full page (template with sidebar) in ``panel serve``."""
        serve_css_locally()
        return self.template().servable(title=title or "Prunescope", **kwargs)

    def _repr_mimebundle_(self, include=None, exclude=None):
        """Inline in a notebook: with ``pn.extension(inline=True)`` every stylesheet is inside the
        page, at the first render and at later updates (see :mod:`~prunescope.explorer.app.notebook`)."""
        from prunescope.explorer.app.notebook import notebook_mimebundle

        return notebook_mimebundle(self, include, exclude)

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Row(
            pn.Column(*self.controls.widgets(), self.files, width=320),
            pn.Column(*self._main(), sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )


def serve_css_locally() -> None:
    """Make this session's Panel stylesheets come from this server, never from cdn.holoviz.org.

    Panel points a component's stylesheets at its CDN unless the session's document says where
    its own static files are (``dist_url``), which Panel records only when it renders the HTML
    page. A session that Bokeh builds again when the websocket connects (the first one expired
    while a slow page loaded: ``--unused-session-lifetime``) never gets it, and every card,
    button and select then asks the CDN for its CSS (offline: unstyled, 15 failed requests).
    Setting it before the first model is built fixes both; in CDN resource mode nothing changes.
    """
    from panel.io.resources import get_dist_path, use_cdn

    doc = pn.state.curdoc
    if doc is not None and doc.session_context is not None and not use_cdn():
        doc._template_variables.setdefault("dist_url", get_dist_path())


def create_app(model: str | None = "digits_mlp", models: "dict[str, ModelEntry] | None" = None,
               max_upload_bytes: int | None = None) -> ExplorerApp:
    """A new app for one session (call it inside the session, e.g. from ``explorer/main.py``)."""
    return ExplorerApp(model=model, models=models, max_upload_bytes=max_upload_bytes)
