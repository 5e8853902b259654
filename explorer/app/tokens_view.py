"""The Tokens tab: token budgets of a vision transformer, next to the weight sliders.

Controls (strategy, its options, one keep ratio with a schedule, or one slider per block) write
``Explorer.set_token_budget``; the app's cards then measure the whole setting (weights and tokens
in one forward). For a picked test image the tab draws the tokens each block keeps, merges or
drops over the picture, the CLS attention per block and head and the attention rollout; three
jobs (progress, cancel) compute retention maps over the test split, Captum attributions of the
dense and the pruned model, and accuracy-vs-budget curves. Models without transformer blocks
show a note instead. Data: :mod:`prunescope.explorer.app.tokens_data`; figures:
:mod:`prunescope.explorer.app.tokens_sections`.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, Callable

import panel as pn

from prunescope.explorer.app.controls import option_widget
from prunescope.explorer.app.dispatch import SessionDispatcher, session_callback
from prunescope.explorer.app.tokens_data import TokenData, parse_blocks, token_controls, token_data_for, token_options
from prunescope.explorer.app.tokens_sections import AttributionSection, CurvesSection, ImageSection, RetentionSection
from prunescope.explorer.viewmodel import percent

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.engine import Explorer

_NOTE = {"font-size": "12px", "color": "#4b5563"}
#: Schedules of a single keep ratio (see ``prunescope.explorer.tokens.budget.token_budget``).
SCHEDULES = {"strategy default": "", "constant from the start block": "constant", "linear decay": "linear",
             "EViT drops (keep^n after n drops)": "drops", "FEATHER two-stage (sqrt(keep), then keep)": "two_stage"}
KEEP_STEP = 0.01


class TokensView(pn.viewable.Viewer):
    """Token-budget controls and the token views of the current explorer (see the module doc).

    ``set_explorer(explorer)`` switches model; ``refresh()`` (called by the app while the tab is
    visible, after every state change) redraws the controls from the state and the image views.
    """

    def __init__(self, dispatch: SessionDispatcher, on_error: Callable[[BaseException], None],
                 clear_error: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._on_error = on_error
        self._clear_error = clear_error or (lambda: None)
        self._explorer: Explorer | None = None
        self._data: dict[int, tuple[TokenData | None, str]] = {}
        self.data: TokenData | None = None
        self._syncing = False
        self._made = None  # the token setting the global controls made last
        self._own = False  # the global controls are changing the state now
        self.strategy = pn.widgets.Select(label="Token strategy", options={}, width=300)
        self.description = pn.pane.HTML("", styles=_NOTE, margin=(0, 10), width=300)
        self.keep = pn.widgets.FloatSlider(label="Keep ratio (fraction of patch tokens)", start=KEEP_STEP, end=1.0,
                                           step=KEEP_STEP, value=1.0, width=300)
        self.start_block = pn.widgets.IntSlider(label="From block", start=0, end=1, value=1, width=300)
        self.schedule = pn.widgets.Select(label="Schedule of the keep ratio", options=SCHEDULES, value="", width=300)
        self.drop_at = pn.widgets.TextInput(label="EViT drop blocks (comma-separated)", value="1, 2, 3", width=300,
                                            visible=False)
        self.seed = pn.widgets.IntInput(label="Seed", value=0, start=0, end=2**31 - 1, width=140)
        self.remove = pn.widgets.Button(label="Remove token budget", width=180)
        self.option_box = pn.FlexBox(sizing_mode="stretch_width")
        self.option_widgets: dict[str, pn.widgets.Widget] = {}
        self._option_strategy: str | None = None
        self.block_box = pn.FlexBox(sizing_mode="stretch_width")
        self.block_sliders: list[pn.widgets.FloatSlider] = []
        self.budget_note = pn.pane.HTML("", styles=_NOTE, sizing_mode="stretch_width")
        self.budget_table = pn.pane.DataFrame(None, index=False, sizing_mode="stretch_width", max_height=220)
        self.message = pn.pane.HTML("", styles=_NOTE, sizing_mode="stretch_width")

        self.image = ImageSection(dispatch, on_error)
        self.retention = RetentionSection(dispatch, on_error, self._current)
        self.attribution = AttributionSection(dispatch, on_error, self._current, lambda: self.image.index.value)
        self.curves = CurvesSection(dispatch, on_error, self._current, self._curve_schedule)
        self.sections = pn.Tabs(("Image", self.image), ("Retention", self.retention),
                                ("Attributions", self.attribution), ("Accuracy vs budget", self.curves),
                                dynamic=False, sizing_mode="stretch_width")
        self.controls = pn.Column(
            pn.FlexBox(pn.Column(self.strategy, self.description), pn.Column(self.keep, self.start_block),
                       pn.Column(self.schedule, self.drop_at), pn.Column(self.seed, self.remove),
                       sizing_mode="stretch_width"),
            self.option_box,
            pn.pane.HTML("<b>Per-block keep</b> (moving one sets a per-block list; it must not increase with depth)",
                         styles={"font-size": "13px"}, margin=(4, 10, 0, 10)),
            self.block_box, self.budget_note, self.budget_table, sizing_mode="stretch_width",
        )
        self._layout = pn.Column(self.message, self.controls, self.sections, sizing_mode="stretch_width")
        self._wire()

    # ------------------------------------------------------------------ wiring
    def _wire(self) -> None:
        guarded = self._guarded
        self.strategy.param.watch(guarded(lambda e: self._apply_global(strategy_changed=True)), "value")
        for w in (self.keep, self.start_block, self.schedule, self.drop_at, self.seed):
            w.param.watch(guarded(lambda e: self._apply_global()), "value")
        self.schedule.param.watch(session_callback(lambda e: setattr(self.drop_at, "visible", e.new == "drops")),
                                  "value")
        self.remove.on_click(guarded(lambda e: self._apply(lambda ex: ex.set_token_budget(None))))
        self.sections.param.watch(session_callback(lambda e: self.refresh()), "active")

    def _guarded(self, callback: Callable[[Any], None]):
        @session_callback
        def run(event: Any) -> None:
            if not self._syncing:
                callback(event)
        return run

    def _current(self):
        """``(explorer, data)`` the jobs work on."""
        return self._explorer, self.data

    def _apply(self, change: Callable[["Explorer"], Any]) -> bool:
        """One engine call; bad input shows the app's alert and the controls go back to the state."""
        try:
            change(self._explorer)
        except Exception as err:  # noqa: BLE001 - ValueError is bad input; anything else is shown too
            self._on_error(err)
            self._sync()
            return False
        self._clear_error()
        return True

    def _strategy_kwargs(self) -> dict[str, Any]:
        options = {name: w.value for name, w in self.option_widgets.items()}
        return {"seed": int(self.seed.value), **options}

    def _schedule_kwargs(self) -> dict[str, Any]:
        """``start_block``, ``schedule`` and ``drop_at`` as the controls say (ValueError on bad text)."""
        kwargs: dict[str, Any] = {"start_block": int(self.start_block.value)}
        if self.schedule.value:
            kwargs["schedule"] = self.schedule.value
        if self.schedule.value == "drops":
            kwargs["drop_at"] = parse_blocks(self.drop_at.value, self.data.num_blocks)
        return kwargs

    def _curve_schedule(self) -> tuple[int, dict[str, Any]]:
        kwargs = self._schedule_kwargs()
        start = kwargs.pop("start_block")
        return start, kwargs

    def _apply_global(self, strategy_changed: bool = False) -> None:
        """The keep ratio, schedule, strategy and options as the controls show them."""
        if self.data is None:
            return
        strategy = self.strategy.value
        if strategy_changed:
            self._build_options(strategy, None)

        def change(ex: "Explorer") -> None:
            kwargs = {**self._schedule_kwargs(), **self._strategy_kwargs()}
            self._own = True  # the state's watchers redraw the tab inside this call
            try:
                ex.set_token_budget(float(self.keep.value), strategy=strategy, **kwargs)
            finally:
                self._own = False
            self._made = ex.setting.tokens

        self._apply(change)

    def _set_block(self, block: int, event: Any) -> None:
        """One per-block slider moved: the budget becomes that per-block list."""
        if self._syncing or self.data is None:
            return
        keep = [float(s.value) for s in self.block_sliders]
        strategy = self.strategy.value
        self._apply(lambda ex: ex.set_token_budget(keep, strategy=strategy, **self._strategy_kwargs()))

    def _build_options(self, strategy: str, values: dict | None) -> None:
        options = token_options(strategy, values)
        self.option_widgets = {o.name: option_widget(o) for o in options}
        for widget in self.option_widgets.values():
            widget.param.watch(self._guarded(lambda e: self._apply_global()), "value")
        self.option_box.objects = list(self.option_widgets.values())
        self._option_strategy = strategy

    # ------------------------------------------------------------------ explorer
    def set_explorer(self, explorer: "Explorer") -> None:
        """Show ``explorer`` (its token data is built once per explorer and kept)."""
        if self._explorer is not explorer:
            for job in (self.retention, self.attribution, self.curves):
                job.job.cancel()
        self._explorer = explorer
        if id(explorer) not in self._data:
            self._data[id(explorer)] = token_data_for(explorer)
        self.data, reason = self._data[id(explorer)]
        self.controls.visible = self.sections.visible = self.data is not None
        if self.data is None:
            self.message.object = (f"<b>{html.escape(explorer.name)}</b> has no token budget: {html.escape(reason)}. "
                                   "Pick a vision transformer such as <code>shapes_vit</code>.")
            return
        self.message.object = (f"<b>{explorer.name}</b>: {self.data.num_blocks} blocks, {self.data.heads} heads, "
                               f"{self.data.patches} patch tokens on a {self.data.grid[0]}x{self.data.grid[1]} grid"
                               f"{' and a CLS token' if self.data.adapter.cls_index is not None else ''}.")
        blocks = self.data.num_blocks
        self._syncing = True
        try:
            self.start_block.param.update(end=max(blocks - 1, 1), value=min(1, blocks - 1),
                                          disabled=blocks < 2)
            self.drop_at.value = ", ".join(str(b) for b in range(1, blocks)) or "0"
            self.block_sliders = [pn.widgets.FloatSlider(label=f"block {b}", start=KEEP_STEP, end=1.0, step=KEEP_STEP,
                                                         value=1.0, width=170) for b in range(blocks)]
            for b, slider in enumerate(self.block_sliders):
                slider.param.watch(session_callback(lambda e, b=b: self._set_block(b, e)), "value")
            self.block_box.objects = list(self.block_sliders)
        finally:
            self._syncing = False
        for section in (self.image, self.retention, self.attribution, self.curves):
            section.set_data(self.data)
        self._option_strategy = None

    def _sync(self) -> None:
        """Every control from the state (no callback runs meanwhile)."""
        if self.data is None:
            return
        vm = token_controls(self.data, self.strategy.value or None)
        tokens = self._explorer.setting.tokens
        self._syncing = True
        try:
            if self.strategy.options != vm.strategies:
                self.strategy.options = vm.strategies
            self.strategy.value = vm.strategy
            self.description.object = vm.description
            if vm.strategy != self._option_strategy:
                self._build_options(vm.strategy, {o.name: o.value for o in vm.options})
            else:
                for option in vm.options:
                    self.option_widgets[option.name].value = option.value
            self.seed.value = vm.seed
            for slider, keep in zip(self.block_sliders, vm.keep):
                slider.value = keep
            if tokens is not None and not self._own and tokens != self._made:
                self.keep.value = min(vm.keep)  # set from elsewhere: the ratio the last block keeps
            if tokens is None:
                self.keep.value = 1.0
            self.remove.disabled = tokens is None
            self.budget_note.object = vm.note
            self.budget_table.object = self._budget_frame(tokens)
        finally:
            self._syncing = False

    def _budget_frame(self, tokens):
        table = self.data.budget_table(tokens)
        return table.assign(
            keep=[percent(k) for k in table["keep"]],
            flops=[f"{v / 1e6:.3f}" for v in table["flops"]],
            dense_flops=[f"{v / 1e6:.3f}" for v in table["dense_flops"]],
            overhead_flops=[f"{v / 1e6:.3f}" for v in table["overhead_flops"]],
        )[["block", "name", "keep", "tokens", "dense_tokens", "flops", "dense_flops", "overhead_flops"]].rename(
            columns={"tokens": "tokens processed", "dense_tokens": "dense tokens", "flops": "FLOPs (M, per image)",
                     "dense_flops": "dense FLOPs (M)", "overhead_flops": "selection FLOPs (M)"})

    def refresh(self) -> None:
        """Redraw the controls from the state and recompute the visible image views."""
        if self._explorer is None or self.data is None:
            return
        self._sync()
        setting = self._explorer.setting
        self.image.show(setting)
        for section in (self.retention, self.attribution, self.curves):
            section.mark(setting)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until the image inspector and every job are idle (tests and scripts)."""
        return all(s.wait_idle(timeout) for s in (self.image, self.retention, self.attribution, self.curves))

    def close(self) -> None:
        """Stop the workers (session ended)."""
        for section in (self.image, self.retention, self.attribution, self.curves):
            section.close()

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout


__all__ = ["TokensView"]
