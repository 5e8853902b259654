"""``TokensBox``: the token controls and heatmaps of :class:`~prunescope.widgets.ExplorerWidget`
for vision transformers (``ex.widget()`` appends it when the model has transformer blocks).

Like the rest of the widget it holds no state of its own: controls render
:func:`~prunescope.explorer.app.tokens_data.token_controls` (the view model the Panel tab renders)
and write through ``Explorer.set_token_budget``; a watcher on ``explorer.state`` redraws. The
picture (tokens kept / merged / dropped at a block, CLS attention of a head, attention rollout)
is drawn by matplotlib into a PNG from :meth:`TokenData.inspect`, inline on the kernel's thread.
"""

from __future__ import annotations

import contextlib
import html
import io
import math
from typing import TYPE_CHECKING, Any, Iterator

import ipywidgets as widgets
import numpy as np

from prunescope.explorer.app.tokens_data import TokenData, token_controls, token_data_for
from prunescope.explorer.tokens import STATUS_NAMES
from prunescope.widgets._html import error_line

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.app.tokens_data import Inspection
    from prunescope.explorer.engine import Explorer

#: Status colours (Okabe-Ito) and opacity over the picture; kept patches stay clear.
STATUS_RGBA = {"kept": (0.0, 0.447, 0.698, 0.0), "merged": (0.902, 0.624, 0.0, 0.6),
               "recycled": (0.8, 0.475, 0.655, 0.6), "dropped": (0.133, 0.133, 0.133, 0.78)}
KEEP_STEP = 0.01
_SLIDER = {"description_width": "150px"}


class TokensBox(widgets.VBox):
    """Strategy, keep ratio (from a start block), per-block keep sliders, test image, block and head
    pickers, and one PNG with the token map, the CLS attention heatmap and the attention rollout.

    Public for scripts and tests: ``strategy``, ``keep``, ``start_block``, ``block_sliders``,
    ``image_index``, ``block``, ``head``; outputs ``picture`` (PNG), ``note``, ``error_html``;
    the drawn data ``inspection``, ``heatmap`` (rows, cols), ``status_map`` (rows, cols) and
    ``counts`` (patches per status at the picked block).
    """

    def __init__(self, explorer: "Explorer", data: TokenData, **kwargs: Any) -> None:
        self.explorer, self.data = explorer, data
        self.error: str | None = None
        self.inspection: Inspection | None = None
        self.heatmap: np.ndarray | None = None
        self.status_map: np.ndarray | None = None
        self.counts: dict[str, int] = {}
        self._drawing = False
        self._drawn: dict[Any, float] = {}
        vm = token_controls(data)
        self.strategy = widgets.Dropdown(options=list(vm.strategies.items()), value=vm.strategy,
                                         description="Token strategy", style=_SLIDER, layout=widgets.Layout(width="480px"))
        self.description = widgets.HTML()
        self.keep = self._slider("Keep ratio", 1.0, "Fraction of the patch tokens each block from the start block keeps")
        self.start_block = widgets.IntSlider(min=0, max=max(data.num_blocks - 1, 1), value=min(1, data.num_blocks - 1),
                                             description="From block", style=_SLIDER, layout=widgets.Layout(width="480px"))
        self.block_sliders = [self._slider(f"block {b} keep", 1.0, f"Keep ratio of block {b}")
                              for b in range(data.num_blocks)]
        self.budget_note = widgets.HTML()
        self.image_index = widgets.IntSlider(min=0, max=max(data.num_images - 1, 1), value=0, description="Test image",
                                             style=_SLIDER, layout=widgets.Layout(width="480px"))
        heads = [("mean over heads", "mean")] + [(f"head {h}", h) for h in range(data.heads)]
        self.block = widgets.Dropdown(options=[(f"block {b}", b) for b in range(data.num_blocks)],
                                      value=min(1, data.num_blocks - 1), description="Show block", style=_SLIDER)
        self.head = widgets.Dropdown(options=heads, value="mean", description="Attention of", style=_SLIDER)
        self.picture = widgets.Image(format="png", layout=widgets.Layout(max_width="720px"))
        self.note = widgets.HTML()
        self.error_html = widgets.HTML()
        super().__init__(children=[
            widgets.HTML("<b>Token budget</b> (vision transformer)"), self.strategy, self.description, self.keep,
            self.start_block, *self.block_sliders, self.budget_note, self.error_html,
            widgets.HBox([self.image_index]), widgets.HBox([self.block, self.head]), self.note, self.picture,
        ], **kwargs)
        self._draw()
        self.strategy.observe(lambda c: self._global(c, strategy_changed=True), "value")
        self.keep.observe(self._global, "value")
        self.start_block.observe(self._global, "value")
        for b, slider in enumerate(self.block_sliders):
            slider.observe(lambda c, b=b: self._per_block(c), "value")
        for w in (self.image_index, self.block, self.head):
            w.observe(lambda c: self._draw_picture() if not self._drawing else None, "value")
        self._watcher = explorer.state.param.watch(lambda *e: self._draw(), ["setting"])

    @staticmethod
    def _slider(description: str, value: float, tooltip: str) -> widgets.FloatSlider:
        return widgets.FloatSlider(min=KEEP_STEP, max=1.0, step=KEEP_STEP, value=value, readout_format=".0%",
                                   description=description, tooltip=tooltip, style=_SLIDER,
                                   layout=widgets.Layout(width="480px"))

    # ------------------------------------------------------------------ controls -> engine
    def _is_echo(self, widget: Any, value: float) -> bool:
        """The browser snapping a drawn value to its step and sending it back is not input."""
        drawn = self._drawn.get(widget)
        step = getattr(widget, "step", 0) or 0
        return drawn is not None and abs(value - drawn) < step / 2 + 1e-9

    def _apply(self, change) -> None:
        self._set_error(None)
        try:
            change()
        except ValueError as err:
            self._set_error(str(err))
            self._draw()

    def _global(self, change: dict, strategy_changed: bool = False) -> None:
        if self._drawing or self._is_echo(change["owner"], change["new"]):
            return
        tokens = self.explorer.setting.tokens
        strategy = self.strategy.value
        options = dict(tokens.options) if tokens is not None and tokens.strategy == strategy else {}
        seed = tokens.seed if tokens is not None else 0
        self._apply(lambda: self.explorer.set_token_budget(round(self.keep.value, 9), strategy=strategy,
                                                           start_block=int(self.start_block.value), seed=seed,
                                                           **options))

    def _per_block(self, change: dict) -> None:
        if self._drawing or self._is_echo(change["owner"], change["new"]):
            return
        tokens = self.explorer.setting.tokens
        strategy = self.strategy.value
        options = dict(tokens.options) if tokens is not None and tokens.strategy == strategy else {}
        keep = [round(s.value, 9) for s in self.block_sliders]
        self._apply(lambda: self.explorer.set_token_budget(keep, strategy=strategy, **options))

    # ------------------------------------------------------------------ engine -> controls
    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        before, self._drawing = self._drawing, True
        try:
            yield
        finally:
            self._drawing = before

    def _set(self, widget: Any, value: Any) -> None:
        widget.value = value
        self._drawn[widget] = value

    def _draw(self) -> None:
        """Every control from the state, then the picture."""
        vm = token_controls(self.data, self.strategy.value)
        tokens = self.explorer.setting.tokens
        with self._guard():
            self.strategy.value = vm.strategy
            self.description.value = f'<span style="font-size:12px;color:#4b5563">{html.escape(vm.description)}</span>'
            for slider, keep in zip(self.block_sliders, vm.keep):
                self._set(slider, keep)
            if tokens is None or not math.isclose(min(vm.keep), self.keep.value, abs_tol=KEEP_STEP / 2):
                self._set(self.keep, min(vm.keep))
            self.budget_note.value = f'<span style="font-size:12px">{html.escape(vm.note)}</span>'
        self._draw_picture()

    def _draw_picture(self) -> None:
        try:
            inspection = self.data.inspect(self.explorer.setting, int(self.image_index.value))
        except Exception as err:  # noqa: BLE001 - shown in the widget
            self._set_error(f"could not inspect this image: {err}")
            return
        self.inspection = inspection
        b, head = int(self.block.value), self.head.value
        status = inspection.status[b].numpy()
        self.status_map = status
        self.counts = {name: int((status == code).sum()) for code, name in enumerate(STATUS_NAMES)}
        if inspection.attention is not None:
            maps = inspection.attention[b]
            self.heatmap = (maps.nanmean(0) if head == "mean" else maps[int(head)]).numpy()
        names = getattr(self.explorer.sample, "class_names", ()) or ()
        name = lambda i: names[i] if 0 <= i < len(names) else str(i)  # noqa: E731
        self.note.value = (f"Image {inspection.index}: true <b>{html.escape(name(inspection.label))}</b>; dense model "
                           f"<b>{html.escape(name(inspection.dense_prediction))}</b> "
                           f"({inspection.dense_probability:.1%}); this setting "
                           f"<b>{html.escape(name(inspection.prediction))}</b> ({inspection.probability:.1%}); "
                           f"block {b} processes {inspection.tokens[b]} tokens.")
        self.picture.value = render_png(inspection, b, self.heatmap, self.counts, head)

    def _set_error(self, message: str | None) -> None:
        self.error = message
        self.error_html.value = error_line(message)

    def close(self) -> None:
        """Stop following the state."""
        if getattr(self, "_watcher", None) is not None:
            self.explorer.state.param.unwatch(self._watcher)
            self._watcher = None
        super().close()


def render_png(inspection: "Inspection", block: int, heatmap: np.ndarray | None, counts: dict[str, int],
               head: Any) -> bytes:
    """Token map, CLS attention and rollout of ``inspection`` at ``block`` as one PNG (matplotlib, Agg)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    image = inspection.image
    rows, cols = inspection.status.shape[1:]
    panels = 1 + (heatmap is not None) + (inspection.rollout is not None)
    fig = Figure(figsize=(2.6 * panels, 2.9), dpi=100, layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    if image is not None:
        h, w = image.shape[1:]
        x = image.detach().double().cpu()
        x = x.expand(3, -1, -1) if x.shape[0] == 1 else x[:3]
        lo, hi = float(x.min()), float(x.max())
        picture = ((x - lo) / max(hi - lo, 1e-12) if lo < 0 or hi > 1 else x).permute(1, 2, 0).numpy()
    else:
        h, w, picture = rows, cols, None
    extent = (0, w, h, 0)
    status = inspection.status[block].numpy()
    overlay = np.zeros((rows, cols, 4))
    for code, name in enumerate(STATUS_NAMES):
        overlay[status == code] = STATUS_RGBA[name]
    panels_data = [("tokens", overlay, None)]
    if heatmap is not None:
        panels_data.append(("attention", heatmap, f"CLS attention, {'head mean' if head == 'mean' else f'head {head}'}"))
    if inspection.rollout is not None:
        panels_data.append(("rollout", inspection.rollout.numpy(), "attention rollout"))
    for ax, (kind, values, title) in zip(axes, panels_data):
        if picture is not None:
            ax.imshow(picture, extent=extent, interpolation="nearest")
        if kind == "tokens":
            ax.imshow(values, extent=extent, interpolation="nearest")
            ax.set_title(f"block {block}: tokens", fontsize=9)
            handles = [Patch(facecolor=STATUS_RGBA[n][:3], alpha=max(STATUS_RGBA[n][3], 0.15), edgecolor="#0072B2",
                             label=f"{n} {counts[n]}") for n in STATUS_NAMES if counts.get(n)]
            ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2,
                      frameon=False)
        else:
            shown = ax.imshow(np.ma.masked_invalid(values), extent=extent, interpolation="nearest", cmap="cividis",
                              alpha=0.75, vmin=0.0)
            fig.colorbar(shown, ax=ax, shrink=0.8).ax.tick_params(labelsize=7)
            ax.set_title(title, fontsize=9)
        ax.set_xlabel("x (pixels)" if picture is not None else "patch column", fontsize=8)
        ax.set_ylabel("y (pixels)" if picture is not None else "patch row", fontsize=8)
        ax.tick_params(labelsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def token_box(explorer: "Explorer") -> TokensBox | None:
    """The token box of ``explorer``, or None when its model has no transformer blocks."""
    data, _reason = token_data_for(explorer)
    return TokensBox(explorer, data) if data is not None else None
