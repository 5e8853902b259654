"""Feature-space geometry of an :class:`~prunescope.explorer.Explorer`'s settings: the pure functions
behind ``ex.features``, ``ex.embedding``, ``ex.geometry``, ``ex.cka``, ``ex.compare_geometry`` and
``ex.fragile_samples``.

Every result is a function of (explorer's model and data, setting, layer, corruption) and is
memoised in the explorer's byte-bounded cache under keys starting with ``"geometry"``. A setting
applies its weight masks *and* its token budget (``ex.params_for`` and ``ex.intervention`` in the
one forward of :func:`prunescope.explorer.core.forward.forward`). "Dense" is the unpruned
model (:data:`~prunescope.explorer.core.setting.DENSE`). Forwards hold the explorer's forward
lock (the app's workers share the module); nothing here mutates the explorer's state.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from prunescope.explorer.core.forward import forward
from prunescope.explorer.core.jobs import check_cancel
from prunescope.explorer.core.setting import DENSE, Setting
from prunescope.explorer.geometry.cka import cka_by_layer, cka_matrix
from prunescope.explorer.geometry.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from prunescope.explorer.geometry.embedding import METHODS, Embedding, fit_embedding
from prunescope.explorer.geometry.features import (
    DEFAULT_MAX_BYTES,
    INPUT_SUFFIX,
    classifier_weight,
    default_layer,
    known_layers,
    prunable_layers,
)
from prunescope.explorer.geometry.robustness import (
    MAX_SETTINGS,
    compare_geometry,
    flips,
    fragile_samples,
    robust_samples,
    robustness_geometry,
)

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.engine import Explorer

Progress = Callable[[int, int], None]
#: First element of every cache key written here.
KEY = "geometry"
#: "Clean" (uncorrupted) inputs, as a corruption name.
CLEAN = "clean"
#: UMAP options of the app's embeddings (McInnes et al. 2018 defaults; seed fixed).
UMAP_OPTIONS = {"n_neighbors": 15, "min_dist": 0.1, "seed": 0}


# ------------------------------------------------------------------------------ explorer access
def _model(ex: "Explorer") -> torch.nn.Module:
    """The module the explorer runs (on its device); never mutated."""
    return ex.run_model


def _lock(ex: "Explorer"):
    return ex.forward_lock


def _locked(ex: "Explorer", fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` holding the forward lock (it runs the shared module with hooks on it)."""
    with _lock(ex):
        return fn(*args)


def _setting(ex: "Explorer", setting: Setting | None) -> Setting:
    setting = ex.setting if setting is None else setting
    if not isinstance(setting, Setting):
        raise ValueError(f"setting must be a Setting, got {type(setting).__name__}")
    return setting


def image_shape(ex: "Explorer") -> tuple[int, ...] | None:
    """``(C, H, W)`` an input sample is shown as: the sample model's, else the inputs' own for
    image batches, else None (flat inputs of a user's model)."""
    shape = getattr(getattr(ex, "sample", None), "image_shape", None)
    if shape is not None:
        return tuple(shape)
    inputs = ex.eval_data[0]
    return tuple(inputs.shape[1:]) if inputs.ndim == 4 else None


def value_range(ex: "Explorer") -> tuple[float, float]:
    """The range of the evaluation inputs (corrupted copies are clipped to it)."""
    inputs = ex.eval_data[0]
    low, high = float(inputs.min()), float(inputs.max())
    return (low, high) if high > low else (low, low + 1.0)


def _check_layer(model: torch.nn.Module, spec: Any) -> None:
    """A ValueError listing the known modules unless ``spec`` names one (or its ``:input``)."""
    name = spec[: -len(INPUT_SUFFIX)] if isinstance(spec, str) and spec.endswith(INPUT_SUFFIX) else spec
    known = known_layers(model)
    if not isinstance(name, str) or name not in known:
        raise ValueError(f"unknown layer {spec!r}; known modules: {', '.join(known)} "
                         f"(append {INPUT_SUFFIX!r} for a module's input)")


def feature_layer(ex: "Explorer", layer: str | None = None) -> str:
    """``layer`` checked against the model (an unknown name lists the known ones), or the default
    feature point: the classifier's input (e.g. ``"fc3:input"``)."""
    model = _model(ex)
    if layer is None:
        return ex.cache.get_or((KEY, "default-layer"), lambda: _locked(ex, default_layer, model, ex.eval_data[0]))
    _check_layer(model, layer)
    return layer


def geometry_layers(ex: "Explorer") -> list[str]:
    """Layer specs a view offers: the default feature point first, then every module's output."""
    first = feature_layer(ex)
    return [first] + [name for name in known_layers(_model(ex)) if name != first]


def check_condition(corruption: str | None, severity: int) -> tuple[str, int]:
    """``(corruption, severity)`` normalised: ``None``/"clean" is ``("clean", 0)``; otherwise a
    kind of :data:`CORRUPTIONS` at severity 1-5 (ValueError naming the allowed values)."""
    if corruption is None or corruption == CLEAN:
        return CLEAN, 0
    if corruption not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {corruption!r}; known: {CLEAN}, {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or severity not in SEVERITIES:
        raise ValueError(f"severity of {corruption!r} must be an integer in 1..5, got {severity!r}")
    return corruption, int(severity)


def condition_inputs(ex: "Explorer", corruption: str | None = None, severity: int = 0) -> torch.Tensor:
    """The evaluation inputs, clean or corrupted (seed 0, memoised: shared by every setting)."""
    corruption, severity = check_condition(corruption, severity)
    inputs = ex.eval_data[0]
    if corruption == CLEAN:
        return inputs

    def make() -> torch.Tensor:
        data = corrupt(inputs.cpu(), corruption, severity, seed=0, image_shape=image_shape(ex),
                       value_range=value_range(ex))
        return data.to(inputs.device)

    return ex.cache.get_or((KEY, "inputs", corruption, severity), make)


def _run(ex: "Explorer", setting: Setting, spec: str, corruption: str = CLEAN,
         severity: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features at spec, logits)`` of ``setting`` on the clean or corrupted inputs (memoised).

    The clean run at the default feature point shares its forward with :func:`layer_activations`
    (one forward per setting serves the scatter, the histograms and CKA)."""
    if corruption == CLEAN and spec == feature_layer(ex):
        feats, logits, _ = _clean_capture(ex, setting)
        return feats, logits
    key = (KEY, "run", setting, spec, corruption, severity)

    def compute() -> tuple[torch.Tensor, torch.Tensor]:
        feats, logits, _ = _pooled_forward(ex, setting, (), spec, condition_inputs(ex, corruption, severity))
        return feats, logits

    return ex.cache.get_or(key, compute)


def _pooled(out: Any) -> torch.Tensor:
    """A module output as ``(samples, dims)`` float32: token sequences ``(B, T, C)`` averaged over
    the tokens (dense and token-pruned sequences then compare, and memory stays ``B x C``), other
    outputs flattened."""
    out = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"a layer gives a {type(out).__name__}, not a tensor")
    out = out.detach()
    if out.ndim == 3:
        out = out.mean(1)
    return out.reshape(out.shape[0], -1).float().cpu()


def cka_layers(ex: "Explorer") -> list[str]:
    """The layers CKA compares: outputs of the modules owning a weight matrix, in execution order."""
    return ex.cache.get_or((KEY, "cka-layers"), lambda: _locked(ex, prunable_layers, _model(ex), ex.eval_data[0]))


def _pooled_forward(ex: "Explorer", setting: Setting, layers: Sequence[str], spec: str | None,
                    inputs: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor, dict[str, torch.Tensor]]:
    """One forward of ``setting`` on ``inputs`` (default: the clean evaluation inputs): the
    flattened features at ``spec`` (if given), the logits, and the :func:`_pooled` outputs of
    ``layers``. The hooks sit on the shared module while the forward lock is held and record only
    this thread's calls (code elsewhere may run the module without the lock, e.g. a FLOP count)."""
    model = _model(ex)
    inputs = ex.eval_data[0] if inputs is None else inputs
    owner = threading.get_ident()
    modules = dict(model.named_modules())
    chunks: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    feats: list[torch.Tensor] = []
    params, intervention = ex.params_for(setting), ex.intervention(setting)

    def keep(value: Any) -> None:
        if threading.get_ident() != owner:
            return
        out = value[0] if isinstance(value, (tuple, list)) else value
        if not feats and 4 * len(inputs) * out[0].numel() > DEFAULT_MAX_BYTES:
            raise ValueError(f"features at {spec!r} on {len(inputs)} samples need "
                             f"{4 * len(inputs) * out[0].numel() / 2**20:.0f} MiB, over "
                             f"{DEFAULT_MAX_BYTES / 2**20:.0f} MiB; pick a smaller layer")
        feats.append(out.detach().reshape(out.shape[0], -1).float().cpu())

    def pool(name: str, out: Any) -> None:
        if threading.get_ident() == owner:
            chunks[name].append(_pooled(out))

    # hooks live on the shared module: register them only while holding the forward lock
    with _lock(ex):
        handles = [modules[n].register_forward_hook(lambda m, a, out, n=n: pool(n, out)) for n in layers]
        try:
            if spec is not None:
                name, is_input = (spec[: -len(INPUT_SUFFIX)], True) if spec.endswith(INPUT_SUFFIX) else (spec, False)
                handles.append(modules[name].register_forward_pre_hook(lambda m, args: keep(args)) if is_input
                               else modules[name].register_forward_hook(lambda m, args, out: keep(out)))
            result = forward(model, params, inputs, intervention=intervention, batch_size=ex.batch_size)
        finally:
            for handle in handles:
                handle.remove()
    missing = [n for n, c in chunks.items() if not c] + ([spec] if spec is not None and not feats else [])
    if missing:
        raise ValueError(f"layer(s) {missing} were never called in the forward pass")
    acts = {n: torch.cat(c) for n, c in chunks.items()}
    return (torch.cat(feats) if spec is not None else None), result.logits.detach().float().cpu(), acts


def _clean_capture(ex: "Explorer", setting: Setting) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Features at the default feature point, logits and the CKA layers' activations of
    ``setting`` on the clean inputs, from one forward (memoised)."""
    layers = tuple(cka_layers(ex))
    spec = feature_layer(ex)
    return ex.cache.get_or((KEY, "clean", setting, spec, layers), lambda: _pooled_forward(ex, setting, layers, spec))


# ------------------------------------------------------------------------------ features
def explorer_features(ex: "Explorer", layer: str | None = None, setting: Setting | None = None) -> torch.Tensor:
    """Activations ``(samples, dims)`` float32 (CPU) of the evaluation data at ``layer`` (a module
    name, or ``"name:input"``; default: the classifier's input) under ``setting`` (default: the
    current one; :data:`DENSE` for the unpruned model). Memoised per (setting, layer)."""
    return _run(ex, _setting(ex, setting), feature_layer(ex, layer))[0]


# ------------------------------------------------------------------------------ embedding
@dataclass(eq=False)
class EmbeddingResult:
    """Dense and pruned 2-D positions of every evaluation sample in one frame.

    ``dense`` are the fitted positions of the dense features, ``pruned`` the pruned features
    placed in that frame without a refit (equal to ``dense`` where the features are equal)."""

    method: str
    layer: str
    dense: np.ndarray  # (n, 2)
    pruned: np.ndarray  # (n, 2)
    cache_hit: bool
    note: str = ""

    @property
    def displacement(self) -> np.ndarray:
        """``(n,)`` distance each sample moved from its dense position."""
        return np.linalg.norm(self.pruned - self.dense, axis=1)


def _fit_key(spec: str, method: str) -> tuple:
    return (KEY, "fit", spec, method, tuple(sorted(UMAP_OPTIONS.items())) if method == "umap" else ())


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown embedding method {method!r}; known: {', '.join(METHODS)}")


def embedding_ready(ex: "Explorer", layer: str | None = None, method: str = "umap") -> bool:
    """Whether the dense frame of (layer, method) is fitted in this explorer already (PCA always
    counts as ready: it is instant), so :func:`explorer_embedding` returns without a long fit."""
    _check_method(method)
    return method == "pca" or _fit_key(feature_layer(ex, layer), method) in ex.cache


def dense_frame(ex: "Explorer", layer: str | None = None, method: str = "umap",
                progress: Progress | None = None, cancel: Any = None) -> Embedding:
    """The fitted frame of the dense features at ``layer`` (UMAP from the disk cache when the same
    features were fitted before, in any process; PCA instant). Memoised per (layer, method)."""
    _check_method(method)
    spec = feature_layer(ex, layer)

    def fit() -> Embedding:
        dense = _run(ex, DENSE, spec)[0]
        if method == "pca":
            return fit_embedding(dense, "pca", progress=progress, cancel=cancel)
        options = {k: v for k, v in UMAP_OPTIONS.items()}
        return fit_embedding(dense, "umap", n_neighbors=options["n_neighbors"], min_dist=options["min_dist"],
                             seed=options["seed"], progress=progress, cancel=cancel)

    return ex.cache.get_or(_fit_key(spec, method), fit)


def explorer_embedding(ex: "Explorer", layer: str | None = None, method: str = "umap",
                       setting: Setting | None = None, progress: Progress | None = None,
                       cancel: Any = None) -> EmbeddingResult:
    """Dense positions (fitted once per layer and method; UMAP cached on disk) and the positions of
    ``setting``'s features placed in the same frame (neighbour placement for UMAP, the linear
    projection for PCA). ``progress``/``cancel`` reach the first fit (a job in the app)."""
    setting = _setting(ex, setting)
    spec = feature_layer(ex, layer)
    frame = dense_frame(ex, spec, method, progress, cancel)
    key = (KEY, "placed", setting, spec, method)

    def place() -> np.ndarray:
        if setting == DENSE:
            return frame.positions
        return frame.place(_run(ex, setting, spec)[0])

    pruned = ex.cache.get_or(key, place)
    return EmbeddingResult(method, spec, frame.positions, pruned, frame.cache_hit, frame.note)


# ------------------------------------------------------------------------------ robustness geometry
def setting_geometry(ex: "Explorer", setting: Setting | None = None, corruption: str | None = None,
                     severity: int = 0) -> pd.DataFrame:
    """Per-sample robustness geometry of one setting at the feature layer (the classifier's input):
    ``sample, label, pred, correct, angle`` (degrees, to the true class's row of the setting's
    classifier weight), ``norm``, ``margin`` (Chen et al. 2022). Memoised."""
    setting = _setting(ex, setting)
    corruption, severity = check_condition(corruption, severity)
    spec = feature_layer(ex)

    def compute() -> pd.DataFrame:
        feats, logits = _run(ex, setting, spec, corruption, severity)
        weight = classifier_weight(_model(ex), ex.params_for(setting), spec).float().cpu()
        return robustness_geometry(feats, logits, ex.eval_data[1].cpu(), weight)

    return ex.cache.get_or((KEY, "geometry", setting, corruption, severity), compute)


def explorer_geometry(ex: "Explorer", setting: Setting | None = None, corruption: str | None = None,
                      severity: int = 0) -> pd.DataFrame:
    """Dense and pruned geometry side by side per sample on the clean or corrupted inputs:
    ``dense_*`` / ``pruned_*`` of pred, correct, angle, norm, margin, ``margin_drop`` and
    ``flip`` (stayed_correct, became_wrong, became_right, stayed_wrong)."""
    setting = _setting(ex, setting)
    corruption, severity = check_condition(corruption, severity)

    def compute() -> pd.DataFrame:
        return flips(setting_geometry(ex, DENSE, corruption, severity),
                     setting_geometry(ex, setting, corruption, severity))

    return ex.cache.get_or((KEY, "flips", setting, corruption, severity), compute)


def explorer_fragile(ex: "Explorer", setting: Setting | None = None, k: int = 16,
                     corruption: str | None = None, severity: int = 0) -> pd.DataFrame:
    """The ``k`` samples most fragile to ``setting``: correct dense and wrong pruned first, then the
    largest margin drop (rows of :func:`explorer_geometry`)."""
    setting = _setting(ex, setting)
    return fragile_samples(setting_geometry(ex, DENSE, corruption, severity),
                           setting_geometry(ex, setting, corruption, severity), k)


def explorer_robust(ex: "Explorer", setting: Setting | None = None, k: int = 16,
                    corruption: str | None = None, severity: int = 0) -> pd.DataFrame:
    """The ``k`` samples most robust to ``setting``: correct in both, smallest margin drop first."""
    setting = _setting(ex, setting)
    return robust_samples(setting_geometry(ex, DENSE, corruption, severity),
                          setting_geometry(ex, setting, corruption, severity), k)


# ------------------------------------------------------------------------------ CKA
@dataclass(eq=False)
class CKAResult:
    """``by_layer``: layer, cka, dims (dense vs pruned per layer, execution order); ``matrix``:
    dense layers (rows) x pruned layers (columns), or None when not asked for."""

    by_layer: pd.DataFrame
    matrix: pd.DataFrame | None
    debiased: bool


def layer_activations(ex: "Explorer", setting: Setting | None = None,
                      layers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """``{layer: (samples, dims)}`` outputs of ``layers`` (default :func:`cka_layers`) under
    ``setting`` on the clean inputs in one forward; token sequences ``(B, T, C)`` are averaged
    over the tokens, other outputs flattened (memoised)."""
    setting = _setting(ex, setting)
    model = _model(ex)
    if layers is None:
        return _clean_capture(ex, setting)[2]
    names = tuple(layers)
    for name in names:
        if isinstance(name, str) and name.endswith(INPUT_SUFFIX):
            raise ValueError(f"CKA compares module outputs; got the input spec {name!r}")
        _check_layer(model, name)
    return ex.cache.get_or((KEY, "activations", setting, names), lambda: _pooled_forward(ex, setting, names, None)[2])


def explorer_cka(ex: "Explorer", setting: Setting | None = None, layers: Sequence[str] | None = None,
                 debiased: bool = False, matrix: bool = True) -> CKAResult:
    """Linear CKA (Kornblith et al. 2019) between the dense and ``setting``'s activations of every
    layer (default :func:`cka_layers`; see :func:`layer_activations`), and with ``matrix=True`` the
    layer x layer matrix, dense layers (rows) against pruned ones (columns). Memoised."""
    setting = _setting(ex, setting)
    names = tuple(cka_layers(ex)) if layers is None else tuple(layers)

    def acts(which: Setting) -> dict[str, torch.Tensor]:
        return layer_activations(ex, which, None if layers is None else names)

    table = ex.cache.get_or((KEY, "cka", setting, names, debiased),
                            lambda: cka_by_layer(acts(DENSE), acts(setting), debiased))
    grid = None
    if matrix:
        grid = ex.cache.get_or((KEY, "cka-matrix", setting, names, debiased),
                               lambda: cka_matrix(acts(DENSE), acts(setting), debiased))
    return CKAResult(table, grid, debiased)


# ------------------------------------------------------------------------------ comparison
def explorer_compare(ex: "Explorer", settings: Mapping[str, Setting],
                     corruptions: Sequence[str] = CORRUPTIONS, severities: Sequence[int] = SEVERITIES,
                     progress: Progress | None = None, cancel: Any = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Up to 4 settings side by side (the comparison of Chen et al. 2022): ``(summary,
    per_sample)``. ``summary`` has one row per (setting label, corruption, severity), settings in
    the given order and the clean inputs first within each, with accuracy and mean angle / norm / margin; ``per_sample`` the per-sample geometry with
    ``setting, corruption, severity`` in front. Each forward is memoised and holds the forward lock
    alone, so the app's evaluations interleave; ``cancel`` stops between forwards."""
    if not isinstance(settings, Mapping) or not 1 <= len(settings) <= MAX_SETTINGS:
        raise ValueError(f"compare 1 to {MAX_SETTINGS} settings (a dict label -> Setting), got "
                         f"{len(settings) if isinstance(settings, Mapping) else type(settings).__name__}")
    for label, setting in settings.items():
        if not isinstance(setting, Setting):
            raise ValueError(f"settings[{label!r}] must be a Setting, got {type(setting).__name__}")
    conditions = [(CLEAN, 0)] + [check_condition(c, s) for c in corruptions for s in severities]
    spec = feature_layer(ex)
    total = len(conditions) * len(settings)
    runs: dict[str, dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]]] = {str(k): {} for k in settings}
    done = 0
    for corruption, severity in conditions:
        for label, setting in settings.items():
            check_cancel(cancel, "geometry comparison", done, total)
            runs[str(label)][(corruption, severity)] = _run(ex, setting, spec, corruption, severity)
            done += 1
            if progress is not None:
                progress(done, total)
    model = _model(ex)
    weights = {str(k): classifier_weight(model, ex.params_for(s), spec).float().cpu() for k, s in settings.items()}
    labels = ex.eval_data[1].cpu()
    summary = compare_geometry(runs, labels, weights)
    frames = []
    for label, by_condition in runs.items():
        for (corruption, severity), (feats, logits) in by_condition.items():
            geo = robustness_geometry(feats, logits, labels, weights[label])
            geo.insert(0, "severity", severity)
            geo.insert(0, "corruption", corruption)
            geo.insert(0, "setting", label)
            frames.append(geo)
    return summary, pd.concat(frames, ignore_index=True)


def method_settings(ex: "Explorer", methods: Sequence[str], sparsity: float | None = None,
                    setting: Setting | None = None) -> tuple[dict[str, Setting], list[str]]:
    """``({method: Setting}, skipped)``: each method at ``sparsity`` (default: the current one) with
    the current token budget; a method with a fixed sparsity (N:M) at its own; methods that cannot
    run there are skipped with the reason."""
    base = _setting(ex, setting)
    target = base.weights.sparsity if sparsity is None else sparsity
    out: dict[str, Setting] = {}
    skipped: list[str] = []
    for method in methods:
        try:
            try:
                weights = ex.weight_setting(method, target)
            except ValueError:
                weights = ex.weight_setting(method, None)  # e.g. N:M: its own sparsity
        except ValueError as err:
            skipped.append(f"{method}: {err}")
            continue
        out[method] = Setting(weights=weights, tokens=base.tokens)
    return out, skipped


__all__ = [
    "CKAResult", "CLEAN", "EmbeddingResult", "check_condition", "cka_layers", "condition_inputs", "dense_frame",
    "embedding_ready", "explorer_cka", "explorer_compare", "explorer_embedding", "explorer_features",
    "explorer_fragile", "explorer_geometry", "explorer_robust", "feature_layer", "geometry_layers", "image_shape",
    "layer_activations", "method_settings", "setting_geometry", "value_range",
]
