"""The Files card of the sidebar: recipes in and out, masks and weights out, weights in.

- Recipe: Save downloads ``explorer.recipe()``; Load reads an uploaded recipe with
  :func:`~prunescope.explorer.recipes.parse_recipe_text` (text only, never a path) and makes its
  setting current; what differs from the model it was made for is shown as a warning.
- Downloads: the masks (safetensors, uint8 by parameter name, as ``ex.export_masks``), the pruned
  weights (the state dict with the pruned entries zeroed, as ``ex.export_weights``) and, for
  structured (channel) settings, the compacted model: a zip of its state dict (safetensors) and a
  ``torch.export`` program.
- Weight upload (``.safetensors`` or a ``.pt`` state dict): ``explorer.load_weights`` checks keys,
  shapes, dtypes, finiteness and size, and returns a NEW explorer; ``on_weights`` swaps it in for
  this session only (other sessions, and the model registry, never see it). Refusals go to
  ``on_error`` (the app's alert) and the session keeps its current weights.

Nothing uploaded touches disk: Panel hands the file over as bytes and everything parses from
memory; downloads are built in memory too. Work that takes longer than a frame (reading and
checking an upload, building a new explorer, ``torch.export``) runs off the event loop.
"""

from __future__ import annotations

import asyncio
import html
import io
import weakref
import zipfile
from typing import TYPE_CHECKING, Callable

import panel as pn
import torch

from prunescope.explorer.app.dispatch import SessionDispatcher, session_callback
from prunescope.explorer.app.export_view import file_stem
from prunescope.explorer.export import masks_bytes, pruned_state_dict, state_dict_bytes
from prunescope.explorer.pruning import get_method
from prunescope.explorer.recipes import check_recipe, parse_recipe_text
from prunescope.explorer.uploads import DEFAULT_MAX_BYTES, SAFETENSORS_SUFFIXES, TORCH_SUFFIXES
from prunescope.explorer.worker import LatestWorker

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.core.setting import Setting
    from prunescope.explorer.engine import Explorer

_NOTE = {"font-size": "12px", "color": "#4b5563"}
_COMPACTED_README = """Compacted model exported by Prunescope ({model}, {setting}).

compacted.safetensors  the state dict of the smaller network (safe to load anywhere):
                       safetensors.torch.load_file("compacted.safetensors")
compacted.pt2          a torch.export program (graph + weights), runs without the model's source:
                       torch.export.load("compacted.pt2").module()(x)   # x: (batch, *input shape)
Load .pt2 files only from sources you trust (torch.export.load can unpickle).
"""


# ------------------------------------------------------------------------------------ payloads
def recipe_payload(explorer: "Explorer") -> bytes:
    """The current setting as recipe text (what Save recipe downloads)."""
    return explorer.recipe().encode("utf-8")


def masks_payload(explorer: "Explorer") -> bytes:
    """The current masks as a safetensors mask file (uint8, 1 = kept), like ``ex.export_masks``."""
    return masks_bytes({name: mask.cpu() for name, mask in explorer.masks.items()})


def pruned_weights_payload(explorer: "Explorer") -> bytes:
    """The model's state dict with every pruned weight zeroed, as safetensors (like ``ex.export_weights``)."""
    masks = {name: mask.cpu() for name, mask in explorer.masks.items()}
    dense = {name: weight.cpu() for name, weight in explorer.dense_weights.items()}
    return state_dict_bytes(pruned_state_dict(explorer.model, masks, dense=dense))


def is_structured(setting: "Setting") -> bool:
    """Whether ``setting`` removes whole channels, so the network can be compacted."""
    weights = setting.weights
    return get_method(weights.method).execution_format(dict(weights.options))["format"] == "compacted"


def compacted_payload(explorer: "Explorer") -> bytes:
    """A zip of the compacted network (structured settings only): ``compacted.safetensors`` (its
    state dict), ``compacted.pt2`` (a ``torch.export`` program, dynamic batch) and a README."""
    setting = explorer.setting
    module = explorer.compacted_model(setting)  # a ValueError names the method if it is not structured
    example = explorer.eval_data[0][:4]
    was_training = module.training
    module.eval()
    try:
        from prunescope.explorer.core.graph import TRACE_LOCK
        with TRACE_LOCK:
            program = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    except Exception as err:  # noqa: BLE001 - torch.export raises many kinds; say what failed
        raise ValueError(f"torch.export could not trace the compacted model ({type(err).__name__}: {err})") from None
    finally:
        module.train(was_training)
    graph = io.BytesIO()
    torch.export.save(program, graph)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("compacted.safetensors", state_dict_bytes(module.state_dict()))
        zf.writestr("compacted.pt2", graph.getvalue())
        zf.writestr("README.txt", _COMPACTED_README.format(model=explorer.name, setting=repr(setting.weights)))
    return archive.getvalue()


# ------------------------------------------------------------------------------------ the card
class FilesCard(pn.viewable.Viewer):
    """Recipe save/load, downloads of masks, pruned weights and the compacted model, weight upload.

    ``on_error(err)`` shows a refusal or failure; ``on_warning(text)`` a recipe made for other
    weights; ``on_weights(explorer)`` swaps in the explorer built from uploaded weights (this
    session only). Uploads above ``max_upload_bytes`` are refused before they are parsed.
    """

    def __init__(self, dispatch: SessionDispatcher, *, on_error: Callable[[BaseException], None],
                 on_warning: Callable[[str], None], on_weights: Callable[["Explorer"], None],
                 max_upload_bytes: int | None = None) -> None:
        super().__init__()
        self._dispatch = dispatch
        self._on_error = on_error
        self._on_warning = on_warning
        self._on_weights = on_weights
        self.max_upload_bytes = DEFAULT_MAX_BYTES if max_upload_bytes is None else int(max_upload_bytes)
        self._explorer: Explorer | None = None
        self._watcher = None
        self._uploaded: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # explorer -> file name
        self._worker = LatestWorker(name="prunescope-files")

        def download(label: str, make: Callable[["Explorer"], bytes], suffix: str, what: str) -> pn.widgets.FileDownload:
            widget = pn.widgets.FileDownload(label=label, filename=f"model-{what}{suffix}", color="light",
                                             sizing_mode="stretch_width", margin=(3, 10), css_classes=[f"ps-save-{what}"])
            widget.callback = self._callback(widget, make, what, suffix)
            return widget

        self.recipe_save = download("Save recipe (.json)", recipe_payload, ".json", "recipe")
        self.recipe_load = pn.widgets.FileInput(accept=".json,.yaml,.yml", sizing_mode="stretch_width",
                                                margin=(3, 10), css_classes=["ps-load-recipe"],
                                                label="Load a recipe")
        self.masks_download = download("Masks (.safetensors)", masks_payload, ".safetensors", "masks")
        self.weights_download = download("Pruned weights (.safetensors)", pruned_weights_payload, ".safetensors",
                                         "pruned-weights")
        self.compacted_download = download("Compacted model (.zip)", compacted_payload, ".zip", "compacted")
        accept = ",".join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)
        self.weights_upload = pn.widgets.FileInput(accept=accept, sizing_mode="stretch_width", margin=(3, 10),
                                                   css_classes=["ps-upload-weights"], label="Upload weights")
        self.weights_note = pn.pane.HTML("", styles=_NOTE, margin=(0, 10), sizing_mode="stretch_width",
                                         css_classes=["ps-weights-note"])
        self.compacted_note = pn.pane.HTML("", styles=_NOTE, margin=(0, 10), sizing_mode="stretch_width")
        for field, load in ((self.recipe_load, self.load_recipe), (self.weights_upload, self.upload_weights)):
            field.param.watch(session_callback(lambda event, field=field, load=load: self._from_input(field, load)),
                              "value")
        self._layout = self._build_layout()
        dispatch.on_destroyed(self.close)

    # ------------------------------------------------------------------------------ state
    @property
    def explorer(self) -> "Explorer | None":
        """The explorer these files are of (the model shown)."""
        return self._explorer

    def set_explorer(self, explorer: "Explorer") -> None:
        """Follow ``explorer`` (the app calls this whenever the model shown changes)."""
        if self._explorer is explorer:
            return
        if self._explorer is not None and self._watcher is not None:
            self._explorer.state.param.unwatch(self._watcher)
        self._explorer = explorer
        self._watcher = explorer.state.param.watch(lambda event: self._update(), "setting")
        self._update()

    def _update(self) -> None:
        explorer = self._explorer
        stem = file_stem(explorer.name)
        for widget, what, suffix in ((self.recipe_save, "recipe", ".json"), (self.masks_download, "masks", ".safetensors"),
                                     (self.weights_download, "pruned-weights", ".safetensors"),
                                     (self.compacted_download, "compacted", ".zip")):
            widget.filename = f"{stem}-{what}{suffix}"
        structured = is_structured(explorer.setting)
        self.compacted_download.disabled = not structured
        self.compacted_note.object = "" if structured else "Compacting needs a structured (channel) setting."
        uploaded = self._uploaded.get(explorer)
        if uploaded is not None:
            self.weights_note.object = (f"Weights: uploaded <b>{html.escape(uploaded)}</b> (this session only; "
                                        f"limit {self.max_upload_bytes / 2**20:.0f} MiB).")
        else:
            source = f"checkpoint <b>{html.escape(explorer.checkpoint)}</b>" if explorer.checkpoint else "as given"
            self.weights_note.object = (f"Weights: {source}. Upload a state dict (.safetensors, or .pt read with "
                                        f"weights_only) of this architecture, up to {self.max_upload_bytes / 2**20:.0f} MiB.")

    # ------------------------------------------------------------------------------ actions
    def load_recipe(self, data: bytes, filename: str = "recipe") -> list[str]:
        """Make the setting of the recipe in ``data`` current; returns what differs from the model
        it was made for (also shown as a warning). Bad recipes raise a ValueError; nothing changes."""
        explorer = self._explorer
        recipe = parse_recipe_text(data)
        differences = check_recipe(recipe, explorer.name, explorer.weights_hash, explorer.weights)
        explorer.set_setting(recipe.setting)
        if differences:
            self._on_warning(f"Recipe {html.escape(filename)} applied, but: " + "; ".join(html.escape(d) for d in differences))
        return differences

    def upload_weights(self, data: bytes, filename: str) -> None:
        """Check uploaded weights on the worker and swap the new explorer in for this session;
        a refusal goes to ``on_error`` and the current weights stay."""
        explorer = self._explorer
        limit = self.max_upload_bytes
        self.weights_note.object = f"Checking <b>{html.escape(filename)}</b>…"

        def done(new: "Explorer") -> None:
            self._uploaded[new] = filename
            self._on_weights(new)
            self._update()

        def failed(err: BaseException) -> None:
            self._update()
            self._on_error(err)

        self._dispatch.submit(self._worker, lambda: explorer.load_weights(data, filename, limit),
                              on_done=done, on_error=failed)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until no upload is being checked (tests and scripts)."""
        return self._worker.wait_idle(timeout)

    def close(self) -> None:
        """Stop the worker (the session ended); nothing was written to disk, so nothing to remove."""
        self._worker.close()

    def _from_input(self, widget: pn.widgets.FileInput, action: Callable[[bytes, str], object]) -> None:
        data, filename = widget.value, widget.filename or "upload"
        if data is None or self._explorer is None:
            return
        try:
            action(data, filename)
        except Exception as err:  # noqa: BLE001 - bad input or a failing engine: shown, the session goes on
            self._on_error(err)
        finally:
            widget.value = None  # the same file can be chosen again (the watcher ignores None)
            widget.clear()

    def _callback(self, widget: pn.widgets.FileDownload, make: Callable[["Explorer"], bytes], what: str,
                  suffix: str) -> Callable:
        """A FileDownload callback building the file off the event loop from the explorer shown now."""

        async def build() -> io.BytesIO:
            explorer = self._explorer
            try:
                content = await asyncio.to_thread(make, explorer)
            except Exception as err:  # noqa: BLE001 - shown in the alert; the session keeps running
                self._on_error(err)
                raise
            widget.filename = f"{file_stem(explorer.name)}-{what}{suffix}"
            return io.BytesIO(content)

        return build

    def _build_layout(self) -> pn.Card:
        def heading(text: str) -> pn.pane.HTML:
            return pn.pane.HTML(f"<b>{text}</b>", styles={"font-size": "13px"}, margin=(6, 10, 0, 10))

        return pn.Card(
            heading("Recipe"), self.recipe_save, self.recipe_load,
            heading("Download"), self.masks_download, self.weights_download, self.compacted_download,
            self.compacted_note,
            heading("Weights"), self.weights_upload, self.weights_note,
            title="Files", collapsed=False, sizing_mode="stretch_width", margin=(10, 0),
        )

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout
