"""The Explorer facade: one model, its evaluation data, the session state and memoised results."""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from dataclasses import replace
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.func import functional_call

from prunescope.explorer.layers import ModelProfile, default_prunable_layers, profile_model
from prunescope.explorer.metrics import Cost, Metrics, cost_of
from prunescope.explorer.pruning import (
    METHODS,
    Masks,
    Ranking,
    ScoreContext,
    check_nm,
    check_sparsity,
    get_method,
)
from prunescope.explorer.state import BACKENDS, PruneSpec, PruningState

_OPTIONS = {"nm": {"n", "m"}, "channel": {"norm"}}
_COMMON_OPTIONS = {"seed", "skip_first_last"}


class _LRU(OrderedDict):
    """A tiny thread-safe memo: ``get_or(key, compute)``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.lock = threading.RLock()

    def get_or(self, key: Any, compute: Callable[[], Any]) -> Any:
        with self.lock:
            if key in self:
                self.move_to_end(key)
                return self[key]
        value = compute()
        with self.lock:
            self[key] = value
            while len(self) > self.size:
                self.popitem(last=False)
        return value


def _as_eval_tensors(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, labels)`` tensors from a pair of tensors/arrays or an iterable of batches."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], (tuple, list)):
        inputs, labels = data
    elif isinstance(data, Iterable):
        batches = list(data)
        if not batches or any(len(b) != 2 for b in batches):
            raise ValueError("data must be (inputs, labels) or an iterable of (inputs, labels) batches")
        inputs = torch.cat([torch.as_tensor(b[0]) for b in batches])
        labels = torch.cat([torch.as_tensor(b[1]) for b in batches])
    else:
        raise ValueError(f"data must be (inputs, labels) or a DataLoader, got {type(data).__name__}")
    inputs, labels = torch.as_tensor(inputs), torch.as_tensor(labels)
    if not inputs.is_floating_point():
        inputs = inputs.float()
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(f"labels must be a 1-D integer tensor of class indices, got {labels.dtype} {tuple(labels.shape)}")
    if len(inputs) != len(labels) or len(labels) == 0:
        raise ValueError(f"inputs and labels must have the same non-zero length, got {len(inputs)} and {len(labels)}")
    return inputs, labels.long()


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """Eval mode for the duration, restoring every submodule's own training flag after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


class Explorer:
    """Prune a model with any registered criterion and measure the result, without mutating it.

    >>> ex = Explorer.from_sample("digits_mlp").prune("lamp", sparsity=0.9)
    >>> m = ex.evaluate(); m.accuracy, m.flops_effective
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        *,
        layers: list[str] | None = None,
        calibration_data: Any = None,
        name: str | None = None,
        batch_size: int = 2048,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self._model = model
        self.name = name or type(model).__name__
        #: The :class:`~prunescope.sample_models.SampleModel` this explorer was built from, if any.
        self.sample = None
        self._inputs, self._labels = _as_eval_tensors(data)
        self._calibration = _as_eval_tensors(calibration_data) if calibration_data is not None else None
        self.batch_size = batch_size
        known = default_prunable_layers(model)
        chosen = list(layers) if layers is not None else known
        unknown = [n for n in chosen if n not in known]
        if unknown or not chosen:
            raise ValueError(f"prunable layers must be Linear/Conv modules of the model; got {unknown or chosen}, known: {known}")
        self._profile = self._check_and_profile(chosen)
        modules = dict(model.named_modules())
        # Snapshot of the dense weights: results stay consistent even if the caller trains the model on.
        self._weights = {n: modules[n].weight.detach().clone() for n in self.layers}
        self._params_total = sum(p.numel() for p in model.parameters())
        self.state = PruningState(name=f"state-{self.name}")
        self._scores = _LRU(16)
        self._masks = _LRU(256)
        self._metrics = _LRU(256)
        self._sensitivity = _LRU(8)
        self._sparse_models = _LRU(4)
        # functional_call swaps the module's parameters for the duration of a call: one forward at
        # a time per explorer (the app's evaluation and sensitivity workers share the model).
        self._forward_lock = threading.RLock()

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_sample(cls, name: str, checkpoint: str = "trained") -> "Explorer":
        """An explorer on a built-in model (see ``list_sample_models()``) and its test split."""
        from prunescope.sample_models import get_sample_model

        spec = get_sample_model(name)
        ex = cls(
            spec.load(checkpoint),
            data=spec.data("test"),
            layers=list(spec.prunable_layers),
            calibration_data=spec.data("train"),
            name=name,
        )
        ex.sample = spec
        return ex

    def _check_and_profile(self, layers: list[str]) -> ModelProfile:
        sample = self._inputs[:1]
        try:
            with _eval_mode(self._model):
                profile = profile_model(self._model, sample, layers)
                with torch.no_grad():
                    out = self._model(sample)
        except (RuntimeError, TypeError) as err:
            raise ValueError(
                f"data inputs of shape {tuple(self._inputs.shape)} do not fit the model: {err}"
            ) from None
        if out.dim() != 2:
            raise ValueError(f"the model must return (batch, classes) logits; got shape {tuple(out.shape)}")
        top = int(self._labels.max())
        if top >= out.shape[1] or int(self._labels.min()) < 0:
            raise ValueError(f"labels must lie in [0, {out.shape[1] - 1}] for {out.shape[1]} model outputs; got max {top}")
        return profile

    # ----------------------------------------------------------------------------- read-only views
    @property
    def model(self) -> nn.Module:
        """The user's module; never mutated by pruning or evaluation."""
        return self._model

    @property
    def layers(self) -> list[str]:
        """Prunable layer names in execution order, as in ``model.named_modules()``."""
        return list(self._profile.names)

    @property
    def profile(self) -> ModelProfile:
        """Shapes, output positions and dense FLOPs of the prunable layers."""
        return self._profile

    @property
    def dense_weights(self) -> dict[str, torch.Tensor]:
        """Snapshot of the prunable layers' dense weights taken at construction (do not modify)."""
        return self._weights

    @property
    def eval_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, labels)`` used by :meth:`evaluate`."""
        return self._inputs, self._labels

    @property
    def methods(self) -> list[str]:
        """Names of the registered pruning criteria."""
        return list(METHODS)

    # ----------------------------------------------------------------------------- changing the state
    def prune(self, method: str, sparsity: float | None = None, **options: Any) -> "Explorer":
        """Prune with ``method`` at ``sparsity`` (fraction of weights removed); returns ``self``.

        Options: ``n``, ``m`` (nm), ``norm`` ('l1'/'l2', channel), ``seed``, ``skip_first_last``.
        Per-layer settings made by hand are cleared. Nothing is changed if the input is bad.
        """
        get_method(method)
        allowed = _OPTIONS.get(method, set()) | _COMMON_OPTIONS
        bad = sorted(set(options) - allowed)
        if bad:
            raise ValueError(f"unknown option(s) {bad} for method {method!r}; allowed: {sorted(allowed)}")
        current = self.state.spec()
        spec = replace(current, method=method, overrides=(), **options)
        if method == "nm":
            n, m = check_nm(spec.n, spec.m)
            if sparsity is not None and abs(float(sparsity) - (1 - n / m)) > 1e-9:
                raise ValueError(f"N:M {n}:{m} has sparsity 1 - n/m = {1 - n / m:g}; got sparsity={sparsity!r}")
            sparsity = 1 - n / m
        spec = replace(spec, sparsity=check_sparsity(current.sparsity if sparsity is None else sparsity))
        if spec.norm not in ("l1", "l2"):
            raise ValueError(f"norm must be 'l1' or 'l2', got {spec.norm!r}")
        if not isinstance(spec.skip_first_last, bool):
            raise ValueError(f"skip_first_last must be True or False, got {spec.skip_first_last!r}")
        if not isinstance(spec.seed, int) or spec.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {spec.seed!r}")
        self.masks_for(spec)  # validates against the model before anything changes
        self._apply(spec)
        return self

    def set_layer_sparsity(self, layer: str, sparsity: float) -> "Explorer":
        """Set one layer's sparsity by hand; the other layers keep theirs. Returns ``self``."""
        if layer not in self.layers:
            raise ValueError(f"unknown layer {layer!r}; prunable layers: {', '.join(self.layers)}")
        value = check_sparsity(sparsity, f"sparsity of layer {layer!r}")
        current = self.state.spec()
        overrides = dict(current.overrides)
        overrides[layer] = value
        spec = replace(current, overrides=tuple(sorted(overrides.items())))
        self.masks_for(spec)
        self._apply(spec)
        return self

    def _apply(self, spec: PruneSpec) -> None:
        self.state.param.update(
            method=spec.method, sparsity=spec.sparsity, layer_sparsity=dict(spec.overrides),
            n=spec.n, m=spec.m, norm=spec.norm, skip_first_last=spec.skip_first_last, seed=spec.seed,
        )

    # ----------------------------------------------------------------------------- results
    @property
    def masks(self) -> Masks:
        """``{layer: bool tensor}`` of the current setting, True = kept, the weight's shape."""
        return self.masks_for(self.state.spec())

    def layer_sparsities(self, spec: PruneSpec | None = None) -> dict[str, float]:
        """Achieved sparsity of every layer for ``spec`` (default: the current setting)."""
        masks = self.masks_for(spec or self.state.spec())
        return {n: 1.0 - float(masks[n].float().mean()) for n in self.layers}

    def layer_settings(self, spec: PruneSpec | None = None) -> dict[str, float]:
        """Each layer's value in the unit :meth:`set_layer_sparsity` takes, for ``spec`` (default: current).

        Hand-set layers give their setting; others what the method allocated: the fraction of
        weights removed, or for structured (channel) pruning the fraction of output channels removed.
        """
        spec = spec or self.state.spec()
        if get_method(spec.method).is_structured:
            masks = self.masks_for(spec)
            values = {n: 1.0 - float(masks[n].flatten(1).any(1).float().mean()) for n in self.layers}
        else:
            values = self.layer_sparsities(spec)
        values.update(dict(spec.overrides))
        return values

    def masks_for(self, spec: PruneSpec) -> Masks:
        """Masks of ``spec`` (pure, memoised). Returned tensors must not be modified."""
        return self._masks.get_or(spec, lambda: self._compute_masks(spec))

    def _compute_masks(self, spec: PruneSpec) -> Masks:
        method = get_method(spec.method)
        excluded = {self.layers[0], self.layers[-1]} if spec.skip_first_last else set()
        options = spec.options()
        scores = self._scores.get_or(
            (spec.method, spec.seed, tuple(sorted(options.items())) if spec.method == "channel" else ()),
            lambda: Ranking(method.scores(self._score_context(spec.seed), **options)),
        )
        overrides = dict(spec.overrides)
        if method.is_structured:
            overrides = {**{n: 0.0 for n in excluded if n != self.layers[-1]}, **overrides}
            return method.masks(scores, self._profile.layers, spec.sparsity, overrides, **options)
        pruned = Ranking({n: s for n, s in scores.items() if n not in excluded}) if excluded else scores
        masks = method.masks(
            pruned, self._profile.layers, spec.sparsity,
            {n: s for n, s in overrides.items() if n in pruned}, **options,
        )
        for n in self.layers:
            if n not in masks:  # excluded layers stay dense unless set by hand
                masks[n] = (
                    method.layer_mask(scores, n, overrides[n], **options)
                    if n in overrides else torch.ones(self._weights[n].shape, dtype=torch.bool)
                )
        return masks

    def _score_context(self, seed: int) -> ScoreContext:
        return ScoreContext(
            weights=self._weights, layers=self._profile.layers, seed=seed,
            gradients=lambda: self._gradients(seed),
        )

    def _gradients(self, seed: int, size: int = 256) -> dict[str, torch.Tensor]:
        """Gradients of the loss w.r.t. the prunable weights on a seeded calibration batch."""
        inputs, labels = self._calibration or (self._inputs, self._labels)
        pick = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:size]
        weights = {f"{n}.weight": w.clone().requires_grad_(True) for n, w in self._weights.items()}
        with self._forward_lock, _eval_mode(self._model):
            logits = functional_call(self._model, weights, (inputs[pick],), strict=False)
            loss = nn.functional.cross_entropy(logits, labels[pick])
            grads = torch.autograd.grad(loss, list(weights.values()))
        return {n: g.detach() for n, g in zip(self._weights, grads)}

    def cost(self, spec: PruneSpec | None = None) -> Cost:
        """Sparsity, parameters and FLOPs of a setting (default: current); instant, no forward pass."""
        return cost_of(self.masks_for(spec or self.state.spec()), self._profile, self._params_total)

    def evaluate(self, backend: str | None = None, spec: PruneSpec | None = None) -> Metrics:
        """Accuracy, loss, parameters and FLOPs of the pruned model on :attr:`eval_data` (memoised)."""
        backend = backend or self.state.backend
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
        spec = spec or self.state.spec()
        return self._metrics.get_or((spec, backend), lambda: self._evaluate(spec, backend))

    def _evaluate(self, spec: PruneSpec, backend: str) -> Metrics:
        masks = self.masks_for(spec)
        logits = self.logits(masks) if backend == "torch" else self.sparse_logits(spec, backend)
        loss = nn.functional.cross_entropy(logits, self._labels).item()
        accuracy = (logits.argmax(1) == self._labels).double().mean().item()
        cost = cost_of(masks, self._profile, self._params_total)
        return Metrics(**vars(cost), accuracy=accuracy, loss=loss, samples=len(self._labels))

    def logits(self, masks: Masks | None = None, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of the model with ``masks`` applied (masked weights, module untouched)."""
        masks = self.masks if masks is None else masks
        inputs = self._inputs if inputs is None else inputs
        weights = {f"{n}.weight": self._weights[n] * masks[n] for n in self.layers if n in masks}
        outs = []
        with self._forward_lock, torch.no_grad(), _eval_mode(self._model):
            for start in range(0, len(inputs), self.batch_size):
                outs.append(functional_call(self._model, weights, (inputs[start : start + self.batch_size],), strict=False))
        return torch.cat(outs)

    def sparse_model(self, spec: PruneSpec | None = None, backend: str = "numba-cpu") -> nn.Module:
        """A copy of the model whose pruned layers run on the sparse kernels (memoised per setting)."""
        from prunescope.explorer.sparse_exec import build_sparse_model

        spec = spec or self.state.spec()
        return self._sparse_models.get_or((spec, backend), lambda: build_sparse_model(self, spec, backend))[0]

    def sparse_logits(self, spec: PruneSpec | None = None, backend: str = "numba-cpu") -> torch.Tensor:
        """Logits of the evaluation data through the sparse kernels (``numba-cpu`` or ``numba-cuda``)."""
        model = self.sparse_model(spec, backend)
        with torch.no_grad():
            return torch.cat([model(self._inputs[i : i + self.batch_size]) for i in range(0, len(self._inputs), self.batch_size)])

    def benchmark(self, batch_size: int = 64, backend: str = "numba-cpu", repeats: int = 20,
                  spec: PruneSpec | None = None, **kwargs: Any):
        """Measured latency of dense torch vs sparse execution, per layer and whole model, beside
        the FLOPs reduction (``progress=``, ``cancel=`` as for :meth:`sensitivity`); see
        :func:`prunescope.explorer.sparse_exec.benchmark`."""
        from prunescope.explorer.sparse_exec import benchmark

        return benchmark(self, spec or self.state.spec(), backend, batch_size, repeats, **kwargs)

    def dense_metrics(self) -> Metrics:
        """Metrics of the unpruned model through dense torch (the reference shown beside every number)."""
        return self.evaluate(backend="torch", spec=PruneSpec(method="magnitude", sparsity=0.0))

    def clear_caches(self, scores: bool = True) -> None:
        """Forget memoised masks, metrics, sparse models and (if ``scores``) criterion scores,
        so that benchmarks time cold work."""
        memos = (self._masks, self._metrics, self._sparse_models) + ((self._scores,) if scores else ())
        for memo in memos:
            with memo.lock:
                memo.clear()

    def sensitivity(self, **kwargs: Any):
        """Measured accuracy vs sparsity per method and per layer; see :func:`sensitivity_analysis`."""
        from prunescope.explorer.sensitivity import sensitivity_analysis

        return sensitivity_analysis(self, **kwargs)

    # ----------------------------------------------------------------------------- views
    def widget(self):
        """An ipywidgets view of this explorer for Jupyter (same state object)."""
        from prunescope.widgets import ExplorerWidget

        return ExplorerWidget(self)

    def __repr__(self) -> str:
        s = self.state
        return f"Explorer({self.name!r}, method={s.method!r}, sparsity={s.sparsity:g}, layers={self.layers})"
