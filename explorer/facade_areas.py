"""The areas' part of the Explorer facade: feature geometry, lottery tickets, recipes and
exports, figures and views. Each method is a thin call into its area's package; the state,
caches and the one forward live in :mod:`prunescope.explorer.engine`."""

from __future__ import annotations

import copy
import os
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch import nn

from prunescope.explorer.core.setting import Setting
from prunescope.explorer.pruning import get_method

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.engine import Explorer


class AreaMethods:
    """Mixed into :class:`~prunescope.explorer.engine.Explorer` (which provides the state)."""

    # ----------------------------------------------------------------------------- feature geometry
    def features(self, layer: str | None = None, setting: Setting | None = None) -> torch.Tensor:
        """``(samples, dims)`` activations at ``layer`` (a module's output, ``"name:input"`` its
        input; default the classifier's input) on the evaluation data under ``setting``."""
        from prunescope.explorer.geometry.facade import explorer_features

        return explorer_features(self, layer, setting)

    def embedding(self, layer: str | None = None, method: str = "umap", setting: Setting | None = None,
                  progress: Callable[[int, int], None] | None = None, cancel: Any = None):
        """UMAP (or PCA) frame of the dense features, fitted once and cached on disk, with the
        pruned features placed in it without a refit."""
        from prunescope.explorer.geometry.facade import explorer_embedding

        return explorer_embedding(self, layer, method, setting, progress, cancel)

    def geometry(self, setting: Setting | None = None, corruption: str | None = None, severity: int = 0):
        """Per-sample angle to the true class's weight vector, feature norm, margin and correctness,
        dense and pruned (on a corrupted copy of the data when asked)."""
        from prunescope.explorer.geometry.facade import explorer_geometry

        return explorer_geometry(self, setting, corruption, severity)

    def cka(self, setting: Setting | None = None, layers: Sequence[str] | None = None, debiased: bool = False,
            matrix: bool = True):
        """Linear CKA between dense and pruned activations per layer, and the layer-by-layer matrix."""
        from prunescope.explorer.geometry.facade import explorer_cka

        return explorer_cka(self, setting, layers, debiased, matrix)

    def compare_geometry(self, settings: Any, progress: Callable[[int, int], None] | None = None,
                         cancel: Any = None, **options: Any):
        """Geometry and accuracy per corruption for up to 4 settings (``{label: Setting}`` or method names)."""
        from prunescope.explorer.geometry.facade import explorer_compare, method_settings

        if not isinstance(settings, dict):
            settings = method_settings(self, settings)[0]
        return explorer_compare(self, settings, progress=progress, cancel=cancel, **options)

    def fragile_samples(self, setting: Setting | None = None, k: int = 16, corruption: str | None = None,
                        severity: int = 0):
        """The samples the setting breaks first (correct dense, wrong pruned; then largest margin drop)."""
        from prunescope.explorer.geometry.facade import explorer_fragile

        return explorer_fragile(self, setting, k, corruption, severity)

    # ----------------------------------------------------------------------------- lottery tickets
    def find_ticket(self, rounds: int = 5, prune_per_round: float = 0.2, criterion: str = "global_magnitude",
                    rewind: str = "init", seeds: Sequence[int] = (0,), epochs: int | None = None, *,
                    run_dir: Any = None, resume: bool = False, theta_0: dict | None = None,
                    theta_k: dict | None = None, lr: float | None = None, batch_size: int | None = None,
                    client: Any = None, progress: Callable[[int, int], None] | None = None, cancel: Any = None,
                    **options: Any):
        """Iterative magnitude pruning with rewinding (Frankle & Carbin, 2019) on this explorer's
        model and training data; every level is written to ``run_dir`` (default: a new folder in
        the user cache) and the run returned; ``ex.prune("ticket", run=run, level=k)`` then shows
        one level. ``theta_0`` / ``theta_k`` default to a sample's ``init`` / ``early`` checkpoints
        (a user's model: the weights it has now as theta_0). ``options`` go to
        :func:`prunescope.explorer.lottery.find_ticket` (``variant='colt'|'swamp'``, ``controls``...)."""
        from prunescope.explorer.lottery import find_ticket

        if self.train_data is None:
            raise ValueError("find_ticket trains the model: give the explorer train_data=(inputs, labels)")
        sample = self.sample
        config = dict(sample.train_config) if sample is not None else {}
        if theta_0 is None:
            theta_0 = sample.state_dict("init") if sample is not None else {
                k: v.detach().cpu().clone() for k, v in self._model.state_dict().items()}
        if theta_k is None and sample is not None:
            theta_k = sample.state_dict("early")
        if run_dir is None:
            from platformdirs import user_cache_dir

            run_dir = os.path.join(os.environ.get("PRUNESCOPE_CACHE_DIR") or user_cache_dir("prunescope"),
                                   "tickets", f"{self.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        model = sample.build() if sample is not None else copy.deepcopy(self._model).cpu()
        return find_ticket(
            model, theta_0, tuple(t.cpu() for t in self.train_data), (self._inputs.cpu(), self._labels.cpu()),
            rounds=rounds, prune_per_round=prune_per_round, epochs=epochs or int(config.get("epochs", 10)),
            lr=lr or float(config.get("lr", 1e-3)), batch_size=batch_size or int(config.get("batch_size", 64)),
            prunable=self.weights, criterion=criterion, rewind=rewind, theta_k_state=theta_k, seeds=seeds,
            model_name=self.name, run_dir=os.fspath(run_dir), resume=resume, progress=progress, cancel=cancel,
            client=client, **options,
        )

    # ----------------------------------------------------------------------------- recipes and exports
    @property
    def weights_hash(self) -> str:
        """SHA-256 of the prunable weights' snapshot (names, dtypes, shapes, bytes)."""
        from prunescope.explorer.recipes import weights_hash

        return self._cache.get_or(("weights-hash",), lambda: weights_hash(self._weights))

    def recipe(self, format: str = "json") -> str:
        """The current setting as a small, versioned recipe (JSON or YAML) with the model's identity."""
        from prunescope.explorer.recipes import SampleRef, dump_recipe

        sample = SampleRef(self.sample.name, self.checkpoint or "trained") if self.sample is not None else None
        return dump_recipe(self.setting, self.name, self.weights_hash, sample, format=format)

    def load_recipe(self, text_or_path: Any) -> "Explorer":
        """Apply a recipe (text or path) made for this model; warns and says what differs if it was
        made for other weights. Returns ``self``."""
        from prunescope.explorer.recipes import parse_recipe

        return self._apply_recipe(parse_recipe(text_or_path))

    def _apply_recipe(self, recipe) -> "Explorer":
        import warnings

        from prunescope.explorer.recipes import check_recipe

        for line in check_recipe(recipe, self.name, self.weights_hash, self.weights):
            warnings.warn(f"recipe: {line}", stacklevel=3)
        return self.set_setting(recipe.setting)

    def export_masks(self, path: Any):
        """Save the current masks as safetensors (uint8, by parameter name); returns the path."""
        from prunescope.explorer.export import save_masks

        return save_masks(self.masks, path)

    def apply_to(self, module: nn.Module) -> nn.Module:
        """Put the current masks on ``module`` with ``torch.nn.utils.prune.custom_from_mask`` so
        training code continues from there; returns it."""
        from prunescope.explorer.export import apply_to

        return apply_to(module, {n: m.cpu() for n, m in self.masks.items()})

    def export_weights(self, path: Any):
        """Save the pruned model's state_dict (masked weights) as safetensors; returns the path."""
        from prunescope.explorer.export import save_pruned_weights

        return save_pruned_weights(self._model, {n: m.cpu() for n, m in self.masks.items()}, path,
                                   dense={n: w.cpu() for n, w in self._weights.items()})

    def compacted_model(self, setting: Setting | None = None) -> nn.Module:
        """For structured pruning: the physically smaller network (its logits equal masked-dense)."""
        setting = self.setting if setting is None else setting
        if get_method(setting.weights.method).execution_format(dict(setting.weights.options))["format"] != "compacted":
            raise ValueError(f"{setting.weights.method!r} is not structured: only channel pruning compacts the network")
        return self.sparse_model(setting)

    def export_compacted(self, path: Any, setting: Setting | None = None) -> dict:
        """Save the compacted network: its state_dict (safetensors) and a ``torch.export`` program."""
        from prunescope.explorer.export import save_compacted

        return save_compacted(self.compacted_model(setting), path, example_inputs=(self._inputs[:4],))

    def load_weights(self, data: bytes, filename: str, max_bytes: int | None = None) -> "Explorer":
        """A new Explorer on this architecture with uploaded weights (safetensors, or a ``.pt``
        state_dict loaded with ``weights_only=True``), checked for keys, shapes, dtypes, finiteness
        and size; the current setting carried over. This explorer is unchanged."""
        from prunescope.explorer.uploads import DEFAULT_MAX_BYTES, expected_from_model, load_uploaded_weights

        state = load_uploaded_weights(data, filename, expected_from_model(self._model),
                                      DEFAULT_MAX_BYTES if max_bytes is None else max_bytes)
        model = copy.deepcopy(self._model)
        model.load_state_dict(state)
        ex = type(self)(model, (self._inputs.cpu(), self._labels.cpu()), weights=self.weights, name=self.name,
                      calibration_data=None if self._calibration is None else tuple(t.cpu() for t in self._calibration),
                      train_data=None if self.train_data is None else tuple(t.cpu() for t in self.train_data),
                      batch_size=self.batch_size, device=self.device, task=self.task, cache_bytes=self._cache.max_bytes)
        ex.sample, ex.checkpoint = self.sample, None
        ex.state.backend = self.state.backend
        try:
            ex.set_setting(self.setting)
        except ValueError:
            pass  # e.g. a ticket of the old weights: the new explorer starts dense
        return ex

    # ----------------------------------------------------------------------------- figures
    def figure(self, name: str, width: str = "single", **options: Any):
        """The paper figure ``name`` of the current setting as a matplotlib Figure (see
        ``prunescope.explorer.figures.list_figures()``); the same data the app draws."""
        from prunescope.explorer.figures import render

        return render(name, self, width=width, **options)

    def figure_data(self, name: str, **options: Any):
        """The tidy table behind figure ``name`` (what its CSV export holds)."""
        from prunescope.explorer.figures import figure_data

        return figure_data(name, self, **options)

    # ----------------------------------------------------------------------------- views
    def app(self):
        """The full Panel app (all tabs) on this explorer; its state is this explorer's state."""
        from prunescope.explorer.app import ExplorerApp

        return ExplorerApp(explorer=self)

    def show(self):
        """Render the full app inline in a notebook (``pn.extension()`` loaded first)."""
        import panel as pn

        if "ipykernel" in __import__("sys").modules:
            pn.extension(inline=True)
        return self.app()

    def serve(self, port: int = 0, address: str = "127.0.0.1", show: bool = False):
        """Serve the full app on this explorer in a background thread; returns the server thread
        (``.stop()`` ends it; ``.port`` once started is where it listens)."""
        import panel as pn

        return pn.serve({"explorer": lambda: self.app().template()}, port=port, address=address, show=show,
                        threaded=True, start=True, title="Prunescope")

    def widget(self):
        """An ipywidgets view of this explorer for Jupyter (same state object)."""
        from prunescope.widgets import ExplorerWidget

        return ExplorerWidget(self)

