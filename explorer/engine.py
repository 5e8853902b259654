"""The Explorer facade: one model, its data, the session state, byte-bounded caches and thin
methods over the functional core (:mod:`prunescope.explorer.core`)."""

from __future__ import annotations

import copy
import hashlib
import os
import threading
import time
from dataclasses import replace
from typing import Any, Callable, Sequence

import torch
from torch import nn

from prunescope.explorer.core.cache import DEFAULT_CACHE_BYTES, ByteLRU
from prunescope.explorer.core.cost import Cost, Metrics, cost_of
from prunescope.explorer.core.data import as_tensors
from prunescope.explorer.core.forward import ForwardResult, eval_mode, forward, masked_params
from prunescope.explorer.core.setting import DENSE, Setting, TokenSetting, WeightSetting
from prunescope.explorer.core.task import Task, mean_interval, stratified_order
from prunescope.explorer.core.weights import ModelProfile, cast_inputs, model_dtype, profile_model, resolve_weight_names
from prunescope.explorer.facade_areas import AreaMethods
from prunescope.explorer.pruning import METHODS, Masks, Ranking, ScoreContext, check_sparsity, get_method
from prunescope.explorer.state import BACKENDS, PruningState


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _setting_seed(setting: Setting) -> int:
    """A stable 32-bit seed derived from a setting (the same in every process)."""
    return int.from_bytes(hashlib.sha256(repr(setting).encode()).digest()[:4], "little")


class Explorer(AreaMethods):
    """Prune a model with any registered criterion and measure the result, without mutating it.

    >>> ex = Explorer.from_sample("digits_mlp").prune("lamp", sparsity=0.9)
    >>> m = ex.evaluate(); m.accuracy, m.flops_effective
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        *,
        weights: Sequence[str] | None = None,
        layers: Sequence[str] | None = None,
        calibration_data: Any = None,
        train_data: Any = None,
        name: str | None = None,
        batch_size: int = 2048,
        device: str | torch.device | None = None,
        loss_fn: Callable | None = None,
        metric_fn: Callable | None = None,
        task: Task | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if weights is not None and layers is not None:
            raise ValueError("give either weights= or layers= (module names), not both")
        self.device = torch.device(device) if device is not None else default_device()
        self._model = model
        # The user's module is never changed: a copy runs where it is not on the chosen device.
        here = next(model.parameters(), torch.empty(0)).device
        self._run_model = model if here == self.device else copy.deepcopy(model).to(self.device)
        self.name = name or type(model).__name__
        #: The :class:`~prunescope.sample_models.SampleModel` this explorer was built from, if any.
        self.sample = None
        self.dtype = model_dtype(model)
        self.task = task or Task.custom(loss_fn, metric_fn)
        self._inputs, self._labels = self._prepare(data, "data")
        self._calibration = self._prepare(calibration_data, "calibration_data") if calibration_data is not None else None
        self.train_data = self._prepare(train_data, "train_data") if train_data is not None else None
        self.batch_size = int(batch_size)
        names = resolve_weight_names(model, weights if weights is not None else layers)
        self._profile = self._check_and_profile(names)
        params = dict(self._run_model.named_parameters())
        # Snapshot of the dense weights: results stay consistent if the caller trains the model on.
        self._weights = {n: params[n].detach().clone() for n in self.weights}
        self._params_total = sum(p.numel() for p in model.parameters())
        self.state = PruningState(name=f"state-{self.name}")
        #: The checkpoint a sample explorer was loaded from (None for a user's model).
        self.checkpoint: str | None = None
        self._cache = ByteLRU(cache_bytes)
        self._free_sparsity = 0.0
        self._seconds_per_sample: float | None = None
        # functional_call swaps the module's parameters for the duration of a call: one forward at
        # a time per explorer (the app's workers share the model).
        self._forward_lock = threading.RLock()

    def _prepare(self, data: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, labels = as_tensors(data, what)
        inputs = cast_inputs(inputs, self.dtype, f"{what} inputs").to(self.device)
        if self.task.classification:
            if labels.is_floating_point() or labels.dim() != 1:
                raise ValueError(f"{what} labels must be a 1-D integer tensor of class indices for classification, "
                                 f"got {labels.dtype} {tuple(labels.shape)}; pass loss_fn/metric_fn for other tasks")
            labels = labels.long()
        return inputs, labels.to(self.device)

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_sample(cls, name: str, checkpoint: str = "trained", **kwargs: Any) -> "Explorer":
        """An explorer on a built-in model (see ``list_sample_models()``) and its test split."""
        from prunescope.sample_models import get_sample_model

        spec = get_sample_model(name)
        weights = getattr(spec, "prunable_weights", None) or [f"{n}.weight" for n in spec.prunable_layers]
        ex = cls(spec.load(checkpoint), data=spec.data("test"), weights=list(weights),
                 calibration_data=spec.data("train"), train_data=spec.data("train"), name=name, **kwargs)
        ex.sample = spec
        ex.checkpoint = checkpoint
        return ex

    @classmethod
    def from_recipe(cls, path: Any, **kwargs: Any) -> "Explorer":
        """Rebuild a sample-model explorer from a recipe file and apply its setting (warns where the
        recipe was made for other weights)."""
        from prunescope.explorer.recipes import parse_recipe

        recipe = parse_recipe(path)
        if recipe.sample is None:
            raise ValueError(f"recipe for {recipe.model_name!r} names no sample model: build the Explorer "
                             "on your model, then call ex.load_recipe(path)")
        ex = cls.from_sample(recipe.sample.name, recipe.sample.checkpoint, **kwargs)
        return ex._apply_recipe(recipe)

    def _check_and_profile(self, names: list[str]) -> ModelProfile:
        sample = self._inputs[:1]
        try:
            profile = profile_model(self._run_model, sample, names)
            with eval_mode(self._run_model), torch.no_grad():
                out = self._run_model(sample)
        except (RuntimeError, TypeError, IndexError) as err:
            raise ValueError(f"data inputs of shape {tuple(self._inputs.shape)} do not fit the model: {err}") from None
        if self.task.classification:
            if not isinstance(out, torch.Tensor) or out.dim() != 2:
                raise ValueError(f"the model must return (batch, classes) logits; got {getattr(out, 'shape', type(out))}")
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
    def weights(self) -> list[str]:
        """Prunable weight names (parameter names) in the order the forward pass uses them."""
        return list(self._profile.names)

    @property
    def layers(self) -> list[str]:
        """Same as :attr:`weights` (the per-weight sliders are labelled with these names)."""
        return self.weights

    @property
    def run_model(self) -> nn.Module:
        """The module forwards run on: the user's, or its copy on :attr:`device`."""
        return self._run_model

    @property
    def forward_lock(self) -> threading.RLock:
        """Held around every forward of :attr:`run_model` (``functional_call`` swaps its parameters)."""
        return self._forward_lock

    @property
    def profile(self) -> ModelProfile:
        """Shapes, kinds and dense FLOPs of the prunable weights."""
        return self._profile

    @property
    def dense_weights(self) -> dict[str, torch.Tensor]:
        """Snapshot of the prunable weights taken at construction (do not modify)."""
        return self._weights

    @property
    def eval_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, labels)`` used by :meth:`evaluate`."""
        return self._inputs, self._labels

    @property
    def methods(self) -> list[str]:
        """Names of the registered pruning criteria (follows the registry)."""
        return list(METHODS)

    @property
    def setting(self) -> Setting:
        """The current setting."""
        return self.state.setting

    # ----------------------------------------------------------------------------- changing the state
    def weight_setting(self, method: str, sparsity: float | None = None, **options: Any) -> WeightSetting:
        """The validated :class:`WeightSetting` for ``prune(method, sparsity, **options)`` (state untouched).

        Options not given take their defaults: a setting means exactly what the call says.
        """
        strategy = get_method(method)
        # paths (and objects that name one, like a ticket run) are stored as text in the setting
        options = {k: os.fspath(v) if hasattr(v, "__fspath__") else v for k, v in options.items()}
        seed = options.pop("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
        frozen = strategy.check_options(options)
        fixed = strategy.fixed_sparsity(dict(frozen))
        if fixed is not None:
            if sparsity is not None and abs(float(sparsity) - fixed) > 1e-9:
                raise ValueError(f"{strategy.display_name} has sparsity {fixed:g} with these options; got sparsity={sparsity!r}")
            sparsity = fixed
        value = check_sparsity(self._free_sparsity if sparsity is None else sparsity)
        setting = WeightSetting(method=method, sparsity=value, options=frozen, seed=int(seed))
        self._validate(setting)
        return setting

    def prune(self, method: str, sparsity: float | None = None, **options: Any) -> "Explorer":
        """Prune with ``method`` at ``sparsity`` (fraction of weights removed) and its ``options``
        (``seed`` and the method's own, see ``get_method(method).Options``); returns ``self``.

        Hand-set weights are cleared; options not given take their defaults; ``sparsity=None``
        keeps the last sparsity chosen for a method without a fixed one. Nothing changes on bad input.
        """
        setting = self.weight_setting(method, sparsity, **options)
        if get_method(method).fixed_sparsity(dict(setting.options)) is None:
            self._free_sparsity = setting.sparsity
        self.state.setting = replace(self.setting, weights=setting)
        return self

    def set_layer_sparsity(self, layer: str, sparsity: float) -> "Explorer":
        """Set one weight's sparsity by hand (module names stand for their ``weight``); returns ``self``."""
        name = layer if layer in self.weights or f"{layer}.weight" not in self.weights else f"{layer}.weight"
        if name not in self.weights:
            raise ValueError(f"unknown weight {layer!r}; prunable weights: {', '.join(self.weights)}")
        value = check_sparsity(sparsity, f"sparsity of {name!r}")
        current = self.setting.weights
        overrides = dict(current.overrides)
        overrides[name] = value
        setting = replace(current, overrides=tuple(sorted(overrides.items())))
        self._validate(setting)
        self.state.setting = replace(self.setting, weights=setting)
        return self

    def set_setting(self, setting: Setting) -> "Explorer":
        """Make ``setting`` current (views and recipes use this); validated first."""
        if not isinstance(setting, Setting):
            raise ValueError(f"setting must be a Setting, got {type(setting).__name__}")
        method = get_method(setting.weights.method)
        if tuple(method.check_options(dict(setting.weights.options))) != tuple(setting.weights.options):
            raise ValueError(f"setting options {setting.weights.options} are not complete for {method.name!r}")
        self._validate(setting.weights)
        if setting.tokens is not None:
            self._token_adapter()  # a token budget needs a transformer
        self.state.setting = setting
        return self

    def _validate(self, setting: WeightSetting) -> None:
        """Cheap checks that need no masks (the masks themselves are computed off the event loop)."""
        method = get_method(setting.method)
        unknown = [n for n, _ in setting.overrides if n not in self.weights]
        if unknown:
            raise ValueError(f"unknown weight(s) {unknown}; prunable weights: {', '.join(self.weights)}")
        steps = method.layer_steps(dict(setting.options))
        for name, value in setting.overrides:
            check_sparsity(value, f"sparsity of {name!r}")
            if steps is not None and not any(abs(value - s) < 1e-9 for s in steps):
                raise ValueError(f"{name!r} under {method.display_name} takes {' or '.join(f'{s:g}' for s in steps)}; got {value:g}")
        method.validate_setting(setting, self._score_context(setting.seed))

    # ----------------------------------------------------------------------------- masks
    @property
    def masks(self) -> Masks:
        """``{weight name: bool tensor}`` of the current setting, True = kept, the weight's shape."""
        return self.masks_for(self.setting)

    def masks_for(self, setting: Setting | WeightSetting | None = None) -> Masks:
        """Masks of ``setting`` (pure, memoised). Returned tensors must not be modified."""
        ws = self._weight_part(setting)
        return self._cache.get_or(("masks", ws), lambda: self._compute_masks(ws))

    def _weight_part(self, setting: Setting | WeightSetting | None) -> WeightSetting:
        setting = self.setting if setting is None else setting
        return setting.weights if isinstance(setting, Setting) else setting

    def _scores_key(self, setting: WeightSetting) -> tuple:
        method = get_method(setting.method)
        seed = setting.seed if method.uses_seed else 0
        return ("scores", setting.method, seed, method.score_options(dict(setting.options)))

    def masks_ready(self, setting: Setting | WeightSetting | None = None) -> bool:
        """Whether the masks of ``setting`` are a scatter away (its criterion's scores are cached),
        so views may compute them on the event loop; otherwise they belong on a worker."""
        ws = self._weight_part(setting)
        return ("masks", ws) in self._cache or self._scores_key(ws) in self._cache

    def _compute_masks(self, setting: WeightSetting) -> Masks:
        method = get_method(setting.method)
        options = dict(setting.options)
        ctx = self._score_context(setting.seed)
        key = self._scores_key(setting)
        scores = self._cache.get_or(key, lambda: Ranking(method.scores(ctx, options)))
        masks = method.masks(scores, ctx, setting)
        return {n: masks[n].to(self.device) for n in self.weights}

    def _score_context(self, seed: int) -> ScoreContext:
        return ScoreContext(weights=self._weights, profile=self._profile, seed=seed,
                            gradients=lambda: self._gradients(seed), channel_groups=self.channel_groups)

    def channel_groups(self) -> list:
        """Coupled channel groups of the traced graph (structured pruning), memoised."""
        from prunescope.explorer.core.graph import channel_groups

        return self._cache.get_or(("groups",), lambda: channel_groups(self._run_model, self._inputs[:2], self.weights))

    def _gradients(self, seed: int, size: int = 256) -> dict[str, torch.Tensor]:
        """Gradients of the loss w.r.t. the prunable weights on a seeded calibration batch."""
        inputs, labels = self._calibration or (self._inputs, self._labels)
        pick = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:size].to(self.device)
        params = {n: w.clone().requires_grad_(True) for n, w in self._weights.items()}
        with self._forward_lock:
            out = forward(self._run_model, params, inputs[pick], grad=True, batch_size=len(pick)).logits
            grads = torch.autograd.grad(self.task.loss_fn(out, labels[pick]), list(params.values()))
        return {n: g.detach() for n, g in zip(params, grads)}

    def layer_sparsities(self, setting: Setting | WeightSetting | None = None) -> dict[str, float]:
        """Achieved sparsity of every prunable weight for ``setting`` (default: the current one)."""
        masks = self.masks_for(setting)
        return {n: 1.0 - float(masks[n].float().mean()) for n in self.weights}

    def layer_settings(self, setting: Setting | WeightSetting | None = None) -> dict[str, float]:
        """Each weight's value in the unit :meth:`set_layer_sparsity` takes (hand-set ones as set)."""
        ws = self._weight_part(setting)
        method = get_method(ws.method)
        masks = self.masks_for(ws)
        values = {n: method.layer_value(masks[n]) for n in self.weights}
        values.update(ws.overrides_dict)
        return values

    # ----------------------------------------------------------------------------- the one forward
    def params_for(self, setting: Setting | WeightSetting | None = None) -> dict[str, torch.Tensor]:
        """Parameters to swap in for ``setting``: every prunable weight times its mask."""
        return masked_params(self._weights, self.masks_for(setting))

    def _token_adapter(self):
        from prunescope.explorer.tokens import find_adapter

        def build():
            with self._forward_lock:  # it runs the shared model once
                return find_adapter(self._run_model, example=self._inputs[:1])

        return self._cache.get_or(("token-adapter",), build)

    def intervention(self, setting: Setting | None = None, record: Any = None):
        """The token intervention of ``setting`` (a context-manager factory), or None."""
        setting = self.setting if setting is None else setting
        if setting.tokens is None or (setting.tokens.is_dense and record is None):
            return None
        from prunescope.explorer.tokens import intervention_factory

        return intervention_factory(self._run_model, self._token_adapter(), setting.tokens, record)

    def run(self, inputs: torch.Tensor | None = None, setting: Setting | None = None, *,
            capture: Sequence[str] = (), record: Any = None) -> ForwardResult:
        """One forward pass with every intervention of ``setting`` (default: current): weight masks
        and token budget. ``capture`` names modules whose outputs are returned."""
        setting = self.setting if setting is None else setting
        inputs = self._inputs if inputs is None else cast_inputs(inputs, self.dtype).to(self.device)
        params = self.params_for(setting)
        with self._forward_lock:
            return forward(self._run_model, params, inputs, intervention=self.intervention(setting, record),
                           capture=capture, batch_size=self.batch_size)

    def logits(self, setting: Setting | None = None, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of the model under ``setting`` (default: current), the module untouched."""
        return self.run(inputs, setting).logits

    # ----------------------------------------------------------------------------- results
    def cost(self, setting: Setting | None = None) -> Cost:
        """Sparsity, parameters and FLOPs of a setting (default: current); no forward pass."""
        setting = self.setting if setting is None else setting
        return self._cache.get_or(("cost", setting), lambda: self._cost(setting))

    def _cost(self, setting: Setting) -> Cost:
        masks = self.masks_for(setting)
        if setting.tokens is None or setting.tokens.is_dense:
            return cost_of(masks, self._profile, self._params_total)
        total, scale = self._token_flops(setting.tokens)
        return cost_of(masks, self._profile, self._params_total, flops_dense=total, flops_scale=scale)

    def _token_flops(self, tokens: TokenSetting) -> tuple[int, dict[str, float]]:
        """FLOPs per sample of the token-pruned dense model (attention, the strategy's own
        selection work and merges included), and the factor by which each prunable weight's FLOPs
        shrink (tokens its block processes over the dense count)."""
        from prunescope.explorer.tokens.flops import outside_flops, token_cost

        adapter = self._token_adapter()
        def count():
            with self._forward_lock:  # counted once (no token setting changes them), on the shared model
                outside = self._cache.get_or(
                    ("token-outside",), lambda: outside_flops(self._run_model, adapter, self._inputs[:1]))
            return token_cost(self._run_model, adapter, tokens, self._inputs[:1], outside=outside)

        counted = self._cache.get_or(("token-cost", tokens), count)
        table = counted["table"]
        scale = {}
        for w in self._profile.weights:
            for name, tok, dense in zip(table["name"], table["tokens"], table["dense_tokens"]):
                if w.name.startswith(f"{name}."):
                    scale[w.name] = float(tok) / float(dense)
        return int(round(counted["flops"])), scale

    def evaluate(self, backend: str | None = None, setting: Setting | None = None) -> Metrics:
        """The task's metric (accuracy), loss, parameters and FLOPs on the full :attr:`eval_data` (memoised)."""
        backend = backend or self.state.backend
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
        setting = self.setting if setting is None else setting
        return self._cache.get_or(("metrics", setting, backend), lambda: self._evaluate(setting, backend))

    def _evaluate(self, setting: Setting, backend: str) -> Metrics:
        started = time.perf_counter()
        if backend == "torch":
            outputs = self.logits(setting)
        else:
            outputs = self.sparse_logits(setting, backend)
        self._note_speed(time.perf_counter() - started, len(self._labels))
        return self._metrics(setting, outputs, self._labels, population=len(self._labels))

    def _metrics(self, setting: Setting, outputs: torch.Tensor, labels: torch.Tensor, population: int,
                 estimate: bool = False) -> Metrics:
        values = self.task.per_sample(outputs, labels)
        low, high = mean_interval(values.cpu(), population, self.task.binary)
        return Metrics(**vars(self.cost(setting)), accuracy=float(values.mean()), loss=self.task.loss(outputs, labels),
                       samples=len(labels), population=population, interval=(low, high), estimate=estimate,
                       metric_name=self.task.metric_name, loss_name=self.task.loss_name)

    def _note_speed(self, seconds: float, samples: int) -> None:
        if samples < 256:  # small batches measure the per-call overhead, not the rate
            return
        rate = seconds / samples
        old = self._seconds_per_sample
        self._seconds_per_sample = rate if old is None else 0.5 * old + 0.5 * rate

    def estimate(self, seconds: float = 0.1, setting: Setting | None = None) -> Metrics:
        """Metrics on a stratified random subset sized to fit ``seconds``, with the 95% interval of
        the full split's metric in ``interval`` (``estimate=True``). When the full split fits the
        budget, this is :meth:`evaluate` (torch backend) and the interval has zero width."""
        if not seconds > 0:
            raise ValueError(f"seconds must be > 0, got {seconds!r}")
        setting = self.setting if setting is None else setting
        full = self._cache.get(("metrics", setting, "torch"))
        if full is not None:
            return full
        total = len(self._labels)
        if self._seconds_per_sample is None:  # calibrate: one warm-up, then one timed batch
            probe = self._inputs[: min(total, 256)]
            self.logits(DENSE, probe)
            started = time.perf_counter()
            self.logits(DENSE, probe)
            self._note_speed(time.perf_counter() - started, len(probe))
        masks_ready = ("masks", setting.weights) in self._cache
        budget = seconds * (0.6 if masks_ready else 0.45)  # leave room for masks, overheads and timing noise (p95)
        n = int(budget / max(self._seconds_per_sample, 1e-9))
        if n >= total:
            return self.evaluate("torch", setting)
        n = max(n, min(total, 32))
        key = ("estimate", setting, n)

        def compute() -> Metrics:
            pick = stratified_order(self._labels.cpu() if self.task.classification else torch.zeros(total, dtype=torch.long),
                                    _setting_seed(setting))[:n].to(self.device)
            outputs = self.logits(setting, self._inputs[pick])
            return self._metrics(setting, outputs, self._labels[pick], population=total, estimate=True)

        return self._cache.get_or(key, compute)

    def sparse_model(self, setting: Setting | None = None, backend: str = "numba-cpu") -> nn.Module:
        """A copy of the model whose pruned weights run on the sparse kernels (memoised per setting)."""
        from prunescope.explorer.sparse_exec import build_sparse_model

        setting = self.setting if setting is None else setting
        return self._cache.get_or(("sparse", setting.weights, backend),
                                  lambda: build_sparse_model(self, setting.weights, backend))[0]

    def sparse_report(self, setting: Setting | None = None, backend: str = "numba-cpu"):
        """Which format each prunable weight ran in (and why a weight stayed in dense torch)."""
        from prunescope.explorer.sparse_exec import build_sparse_model

        setting = self.setting if setting is None else setting
        return self._cache.get_or(("sparse", setting.weights, backend),
                                  lambda: build_sparse_model(self, setting.weights, backend))[1]

    def sparse_logits(self, setting: Setting | None = None, backend: str = "numba-cpu") -> torch.Tensor:
        """Logits of the evaluation data through the sparse kernels (``numba-cpu`` or ``numba-cuda``)."""
        setting = self.setting if setting is None else setting
        model = self.sparse_model(setting, backend)
        with self._forward_lock:
            return forward(model, {}, self._inputs, intervention=None, batch_size=self.batch_size).logits

    def benchmark(self, batch_size: int = 64, backend: str = "numba-cpu", repeats: int = 20,
                  setting: Setting | None = None, **kwargs: Any):
        """Measured latency of dense torch vs sparse execution, per weight and whole model, beside
        the FLOPs reduction (``progress=``, ``cancel=``); see :func:`prunescope.explorer.sparse_exec.benchmark`."""
        from prunescope.explorer.sparse_exec import benchmark

        return benchmark(self, (self.setting if setting is None else setting).weights, backend, batch_size, repeats, **kwargs)

    def dense_metrics(self) -> Metrics:
        """Metrics of the unpruned model through dense torch (the reference shown beside every number)."""
        return self.evaluate(backend="torch", setting=DENSE)

    def clear_caches(self, scores: bool = True) -> None:
        """Forget memoised results (and, if ``scores``, criterion scores) so benchmarks time cold work."""
        if scores:
            self._cache.clear()
            return
        kept = [(k, self._cache.get(k)) for k in list(self._cache._items) if k[0] in ("scores", "groups", "token-adapter")]
        self._cache.clear()
        for k, v in kept:
            self._cache.put(k, v)

    @property
    def cache(self) -> ByteLRU:
        """The explorer's byte-bounded result cache (``cache.max_bytes`` is settable)."""
        return self._cache

    def sensitivity(self, **kwargs: Any):
        """Measured accuracy vs sparsity per method and per weight; see :func:`sensitivity_analysis`."""
        from prunescope.explorer.sensitivity import sensitivity_analysis

        return sensitivity_analysis(self, **kwargs)

    # ----------------------------------------------------------------------------- tokens
    def set_token_budget(self, keep: float | Sequence[float] | None, strategy: str = "cls_attention",
                         **options: Any) -> "Explorer":
        """Token budget: ``keep`` = fraction of the original patch tokens each block processes (one
        ratio from ``start_block`` on, a non-increasing per-block list, or ``schedule=...``);
        ``None`` removes the budget. Returns ``self``; nothing changes on bad input."""
        if keep is None:
            self.state.setting = replace(self.setting, tokens=None)
            return self
        from prunescope.explorer.tokens import intervention_factory, make_token_setting

        adapter = self._token_adapter()
        tokens: TokenSetting = make_token_setting(strategy, keep, adapter.num_blocks, **options)
        intervention_factory(self._run_model, adapter, tokens)  # validates against the model
        self.state.setting = replace(self.setting, tokens=tokens)
        return self

    def __repr__(self) -> str:
        w = self.setting.weights
        return f"Explorer({self.name!r}, method={w.method!r}, sparsity={w.sparsity:g}, weights={len(self.weights)})"
