"""Activations at named points of a model, dense or pruned, batched and bounded in bytes.

A *layer spec* names a module of ``model.named_modules()``: ``"fc2"`` is that module's output,
``"fc3:input"`` its (first) input. The default point is the input of the classifier, the last
``nn.Linear`` the forward pass calls (the "feature layer" of Chen et al. 2022, *Understanding
Robustness Lottery*). Activations are flattened to ``(samples, dims)`` float32 on the CPU, so a
capture holds ``4 * samples * dims`` bytes per layer; intermediate activations are bounded by
``batch_size``.
"""

from __future__ import annotations

from typing import Callable, ContextManager, Sequence

import torch
from torch import nn

from prunescope.explorer.core.forward import ForwardResult, eval_mode, forward

#: Suffix of a layer spec naming a module's input instead of its output.
INPUT_SUFFIX = ":input"
#: Default bound on the bytes of all captured activations together (float32).
DEFAULT_MAX_BYTES = 512 * 2**20


def known_layers(model: nn.Module) -> list[str]:
    """Names of every submodule (the root excluded), in registration order."""
    return [name for name, _ in model.named_modules() if name]


def _resolve(model: nn.Module, spec: str) -> tuple[str, bool]:
    """``(module name, is_input)`` of a layer spec; unknown names list the known ones."""
    if not isinstance(spec, str):
        raise ValueError(f"layer must be a module name (str), got {spec!r}")
    name, is_input = (spec[: -len(INPUT_SUFFIX)], True) if spec.endswith(INPUT_SUFFIX) else (spec, False)
    modules = dict(model.named_modules())
    if not name or name not in modules:
        raise ValueError(
            f"unknown layer {spec!r}; known modules: {', '.join(known_layers(model))} "
            f"(append {INPUT_SUFFIX!r} for a module's input)"
        )
    return name, is_input


def execution_order(model: nn.Module, example: torch.Tensor, kind: type = nn.Module) -> list[str]:
    """Names of the submodules of type ``kind`` in the order one forward pass on ``example`` calls them."""
    order: list[str] = []
    handles = [
        module.register_forward_pre_hook(lambda m, a, n=name: order.append(n))
        for name, module in model.named_modules()
        if name and isinstance(module, kind)
    ]
    try:
        with eval_mode(model), torch.no_grad():
            model(example[:1])
    finally:
        for handle in handles:
            handle.remove()
    return list(dict.fromkeys(order))


def classifier_layer(model: nn.Module, example: torch.Tensor) -> str:
    """Name of the classifier: the last ``nn.Linear`` called in a forward pass on ``example``."""
    linears = execution_order(model, example, nn.Linear)
    if not linears:
        raise ValueError("the model calls no nn.Linear, so it has no default feature layer; pass layer=")
    return linears[-1]


def default_layer(model: nn.Module, example: torch.Tensor) -> str:
    """The default feature point: the classifier's input, e.g. ``"fc3:input"``."""
    return classifier_layer(model, example) + INPUT_SUFFIX


def prunable_layers(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Outputs of the modules owning a weight matrix or kernel (ndim >= 2), in execution order.

    These are the points :func:`prunescope.explorer.geometry.cka.cka_by_layer` compares by default.
    """
    owners = {name for name, module in model.named_modules() if name
              and any(p.ndim >= 2 for p in module.parameters(recurse=False))}
    return [name for name in execution_order(model, example) if name in owners]


def capture(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    inputs: torch.Tensor,
    layers: Sequence[str],
    *,
    intervention: Callable[[], ContextManager] | None = None,
    batch_size: int = 1024,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ForwardResult:
    """Logits and the activations at every layer spec in ``layers`` in one batched forward.

    Runs :func:`prunescope.explorer.core.forward.forward` (``params`` swapped in with
    ``functional_call``, ``intervention`` entered per batch). Raises ``ValueError`` as soon as the
    first batch shows the captures would exceed ``max_bytes`` (4 bytes per float).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    resolved = {spec: _resolve(model, spec) for spec in layers}
    modules = dict(model.named_modules())
    captured: dict[str, list[torch.Tensor]] = {spec: [] for spec in layers}
    n = len(inputs)

    def record(spec: str, value) -> None:
        out = value[0] if isinstance(value, (tuple, list)) else value
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"layer {spec!r} gives a {type(out).__name__}, not a tensor")
        out = out.detach().reshape(out.shape[0], -1).float().cpu()
        if not captured[spec]:  # first batch: check the whole capture's size before going on
            first = {s: captured[s][0].shape[1] for s in layers if captured[s]}
            first[spec] = out.shape[1]
            total = 4 * n * sum(first.values())
            if total > max_bytes:
                raise ValueError(
                    f"capturing {', '.join(first)} on {n} samples needs {total / 2**20:.1f} MiB, "
                    f"over max_bytes={max_bytes / 2**20:.1f} MiB; capture fewer layers or samples"
                )
        captured[spec].append(out)

    handles = []
    for spec, (name, is_input) in resolved.items():
        if is_input:
            hook = modules[name].register_forward_pre_hook(lambda m, args, s=spec: record(s, args))
        else:
            hook = modules[name].register_forward_hook(lambda m, args, out, s=spec: record(s, out))
        handles.append(hook)
    try:
        result = forward(model, params, inputs, intervention=intervention, batch_size=batch_size)
    finally:
        for handle in handles:
            handle.remove()
    missing = [spec for spec, chunks in captured.items() if len(chunks) == 0 and n > 0]
    if missing:
        raise ValueError(f"layer(s) {missing} were never called in the forward pass")
    feats = {spec: torch.cat(chunks) if chunks else torch.empty(0, 0) for spec, chunks in captured.items()}
    return ForwardResult(logits=result.logits.detach(), features=feats)


def features(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    inputs: torch.Tensor,
    layer: str | None = None,
    *,
    intervention: Callable[[], ContextManager] | None = None,
    batch_size: int = 1024,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> torch.Tensor:
    """Activations ``(samples, dims)`` float32 at ``layer`` (default: the classifier's input).

    ``params`` are the tensors to swap in (``{}`` for the dense model, or
    :func:`prunescope.explorer.core.forward.masked_params`). Memory: ``4 * samples * dims`` bytes
    for the result, at most ``max_bytes``.
    """
    spec = default_layer(model, inputs) if layer is None else layer
    result = capture(model, params, inputs, [spec], intervention=intervention,
                     batch_size=batch_size, max_bytes=max_bytes)
    return result.features[spec]


def classifier_weight(model: nn.Module, params: dict[str, torch.Tensor], layer: str) -> torch.Tensor:
    """The ``(classes, dims)`` weight of the classifier named by ``layer`` (a spec or a module
    name), taken from ``params`` where it is swapped in (pruned), else from the model."""
    name, _ = _resolve(model, layer)
    key = f"{name}.weight"
    if key in params:
        return params[key].detach()
    module = dict(model.named_modules())[name]
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise ValueError(f"layer {name!r} has no 2-D weight, so it is not a linear classifier")
    return weight.detach()
