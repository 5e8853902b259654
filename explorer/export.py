"""Taking the result out: masks as safetensors, masks on a user's module, pruned and compacted weights.

Everything here works on plain inputs: a module, masks ``{parameter name: BoolTensor}`` (True =
kept, same shape as the parameter) and state dicts, so it serves the Explorer facade, the app's
download buttons and a user's own script alike.

- :func:`save_masks` / :func:`load_masks`: masks as a safetensors file (bool stored as uint8).
- :func:`apply_to`: the masks on a module through ``torch.nn.utils.prune.custom_from_mask``, so a
  training loop continues from the pruned model (the mask stays applied on every forward).
- :func:`pruned_state_dict` / :func:`save_pruned_weights`: the dense state dict with the masked
  weights zeroed, loadable into the original architecture.
- :func:`save_compacted`: a structurally pruned, smaller module as a state dict plus, on request,
  a ``torch.export`` program (runs without the model's source) or a pickled module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils import prune

Masks = dict[str, torch.Tensor]

#: Metadata key of the mask files, so a mask file is recognised as one.
MASKS_FORMAT = "prunescope-masks"


def _tensors_for_file(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Own, contiguous CPU copies (safetensors refuses shared or strided storage)."""
    return {name: t.detach().cpu().contiguous().clone() for name, t in tensors.items()}


# ------------------------------------------------------------------------------------ masks
def _parameter_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """``{parameter name: shape}``, a parameter pruned by ``torch.nn.utils.prune`` under its own name
    (``fc1.weight`` for ``fc1.weight_orig`` + ``fc1.weight_mask``)."""
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    for name in list(shapes):
        if name.endswith("_orig") and name[: -len("_orig")] + "_mask" in buffers:
            shapes[name[: -len("_orig")]] = shapes.pop(name)
    return shapes


def check_masks(masks: Mapping[str, torch.Tensor], model: nn.Module | None = None) -> None:
    """Raise ``ValueError`` unless ``masks`` are boolean tensors keyed by parameter names of ``model``
    with the parameters' shapes (without ``model`` only the types are checked)."""
    if not isinstance(masks, Mapping) or not masks:
        raise ValueError("masks must be a non-empty dict {parameter name: BoolTensor}")
    params = _parameter_shapes(model) if model is not None else None
    problems = []
    for name, mask in masks.items():
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            what = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            problems.append(f"{name!r} is {what}, must be a torch.bool tensor")
        elif params is not None and name not in params:
            problems.append(f"{name!r} is not a parameter of the model")
        elif params is not None and tuple(mask.shape) != params[name]:
            problems.append(f"{name!r} has shape {tuple(mask.shape)}, the parameter {params[name]}")
    if problems:
        known = f"; parameters: {', '.join(params)}" if params is not None else ""
        raise ValueError("bad masks: " + "; ".join(problems) + known)


def save_masks(masks: Mapping[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Write ``masks`` to ``path`` as safetensors: one uint8 tensor (1 = kept) per parameter name."""
    check_masks(masks)
    path = Path(path)
    tensors = {name: m.to(torch.uint8) for name, m in masks.items()}
    save_file(_tensors_for_file(tensors), str(path), metadata={"format": MASKS_FORMAT})
    return path


def masks_from_bytes(data: bytes) -> Masks:
    """Masks from the bytes of a :func:`save_masks` file, validated (uint8 values 0/1 only)."""
    try:
        raw = st_load(data)
    except (SafetensorError, ValueError) as err:
        raise ValueError(f"not a readable safetensors mask file (truncated or another format?): {err}") from None
    if not raw:
        raise ValueError("the mask file holds no tensors")
    masks = {}
    for name, t in raw.items():
        if t.dtype not in (torch.uint8, torch.bool):
            raise ValueError(f"mask {name!r} is {t.dtype}; mask files hold uint8 (0 = pruned, 1 = kept)")
        if t.dtype == torch.uint8 and bool((t > 1).any()):
            raise ValueError(f"mask {name!r} holds values other than 0 and 1")
        masks[name] = t.bool()
    return masks


def load_masks(path: str | os.PathLike, model: nn.Module | None = None) -> Masks:
    """The masks saved at ``path``; with ``model``, names and shapes are checked against its parameters."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no mask file at {str(path)!r}")
    masks = masks_from_bytes(path.read_bytes())
    if model is not None:
        check_masks(masks, model)
    return masks


# ------------------------------------------------------------------------------------ masks on a module
def _owner(module: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The submodule holding parameter ``name`` and the parameter's leaf name."""
    prefix, _, leaf = name.rpartition(".")
    return (module.get_submodule(prefix) if prefix else module), leaf


def _refresh_out_proj(mha: nn.MultiheadAttention, inputs) -> None:
    """Forward pre-hook on a MultiheadAttention: recompute ``out_proj.weight`` from its mask.

    ``nn.MultiheadAttention`` reads ``out_proj.weight`` directly and never calls ``out_proj``, so
    the hook ``custom_from_mask`` puts on ``out_proj`` never runs; without this the weight would
    stay the tensor computed when the mask was applied (stale after an optimizer step, and a second
    backward through it fails).
    """
    out_proj = mha.out_proj
    for hook in out_proj._forward_pre_hooks.values():
        if isinstance(hook, prune.BasePruningMethod) and hook._tensor_name == "weight":
            hook(out_proj, inputs)


def apply_to(module: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Put ``masks`` on ``module`` in place with ``torch.nn.utils.prune.custom_from_mask``; returns it.

    Each masked parameter ``p`` becomes ``p_orig`` (trainable) and the buffer ``p_mask``, and
    ``p = p_orig * p_mask`` is recomputed before every forward, so training continues on the pruned
    model; ``prune.remove(submodule, leaf)`` makes it permanent. Works for any parameter, e.g.
    ``fc1.weight`` or ``enc.layers.0.self_attn.in_proj_weight``. Caveat: for
    ``nn.MultiheadAttention``'s ``out_proj.weight`` the attention module never calls ``out_proj``,
    so a pre-hook is added on the attention module that recomputes the masked weight (see
    :func:`_refresh_out_proj`; it does nothing once ``prune.remove(out_proj, "weight")`` ran; a
    fresh module loaded from a state dict needs ``apply_to`` again). As with any
    ``torch.nn.utils.prune`` module, ``copy.deepcopy`` of the result fails (the masked weight is
    not a graph leaf): copy before applying. A parameter already pruned through ``torch.nn.utils.prune`` gets the new
    mask combined with the old one (prune's own behaviour).
    """
    check_masks(masks, module)
    modules = dict(module.named_modules())
    for name, mask in masks.items():
        owner, leaf = _owner(module, name)
        prune.custom_from_mask(owner, leaf, mask.to(getattr(owner, leaf).device))
        parent_name, _, child = name.rpartition(".")[0].rpartition(".")
        parent = modules.get(parent_name)
        if isinstance(parent, nn.MultiheadAttention) and child == "out_proj" and leaf == "weight" \
                and _refresh_out_proj not in parent._forward_pre_hooks.values():
            parent.register_forward_pre_hook(_refresh_out_proj)
    return module


# ------------------------------------------------------------------------------------ pruned weights
def pruned_state_dict(model: nn.Module, masks: Mapping[str, torch.Tensor],
                      dense: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` with every masked parameter zeroed where its mask is False (own copies).

    ``dense`` replaces the model's tensors where given (e.g. the Explorer's snapshot of the dense
    weights), so the export is of the weights that were pruned even if the module trained on.
    """
    check_masks(masks, model)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for name, tensor in (dense or {}).items():
        if name not in state:
            raise ValueError(f"dense weight {name!r} is not in the model's state dict")
        state[name] = tensor.detach().clone()
    for name, mask in masks.items():
        if name not in state:
            raise ValueError(f"{name!r} is not in the model's state dict (already pruned with torch.nn.utils.prune?)")
        state[name] = state[name] * mask.to(state[name].dtype)
    return state


def save_pruned_weights(model: nn.Module, masks: Mapping[str, torch.Tensor], path: str | os.PathLike,
                        dense: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write :func:`pruned_state_dict` to ``path`` as safetensors (load with ``safetensors.torch.load_file``)."""
    path = Path(path)
    save_file(_tensors_for_file(pruned_state_dict(model, masks, dense)), str(path),
              metadata={"format": "prunescope-pruned-weights"})
    return path


def save_compacted(module: nn.Module, path: str | os.PathLike, *,
                   example_inputs: tuple[torch.Tensor, ...] | None = None,
                   dynamic_batch: bool = True, pickle_module: bool = False) -> dict[str, Path]:
    """Save a compacted (structurally pruned, smaller) module; returns ``{kind: path}`` of what was written.

    Always ``<path>.safetensors``: the state dict, for the compacted architecture. With
    ``example_inputs``, also ``<path>.pt2``: a ``torch.export`` program (graph + weights) that runs
    without the model's source: ``torch.export.load(f).module()(x)``; the batch dimension is
    dynamic when ``dynamic_batch`` (export with an example batch of at least 2). With
    ``pickle_module=True`` also ``<path>.module.pt``: ``torch.save(module)``, which only loads with
    ``torch.load(f, weights_only=False)`` and the model's classes importable. Caveat: unpickling can
    run arbitrary code, and ``torch.export.load`` falls back to full unpickling for some contents,
    so load ``.pt2`` and ``.module.pt`` files only from sources you trust; the ``.safetensors``
    file is always safe to load.
    """
    base = Path(path)
    if base.suffix in (".safetensors", ".pt2", ".pt"):
        base = base.with_suffix("")
    written = {"state_dict": base.with_suffix(".safetensors")}
    save_file(_tensors_for_file(module.state_dict()), str(written["state_dict"]),
              metadata={"format": "prunescope-compacted"})
    if example_inputs is not None:
        written["program"] = base.with_suffix(".pt2")
        save_exported(module, example_inputs, written["program"], dynamic_batch=dynamic_batch)
    if pickle_module:
        written["module"] = base.with_name(base.name + ".module.pt")
        torch.save(module, str(written["module"]))
    return written


def save_exported(module: nn.Module, example_inputs: tuple[torch.Tensor, ...], path: str | os.PathLike,
                  *, dynamic_batch: bool = True) -> Path:
    """``torch.export`` ``module`` (in eval mode) on ``example_inputs`` and save the program to ``path``."""
    if not isinstance(example_inputs, tuple) or not example_inputs:
        raise ValueError(f"example_inputs must be a non-empty tuple of tensors, got {type(example_inputs).__name__}")
    dynamic = None
    if dynamic_batch:
        if example_inputs[0].shape[0] < 2:
            raise ValueError("export with an example batch of at least 2 samples for a dynamic batch dimension")
        batch = torch.export.Dim("batch")
        dynamic = tuple({0: batch} for _ in example_inputs)
    was_training = module.training
    module.eval()
    try:
        from prunescope.explorer.core.graph import TRACE_LOCK
        with TRACE_LOCK:
            program = torch.export.export(module, example_inputs, dynamic_shapes=dynamic)
    except Exception as err:  # noqa: BLE001 - torch.export raises many kinds; say what failed
        raise ValueError(f"torch.export could not trace the module ({type(err).__name__}: {err}); "
                         "save the state dict only, or pass pickle_module=True") from None
    finally:
        module.train(was_training)
    path = Path(path)
    torch.export.save(program, str(path))
    return path


def state_dict_bytes(state: Mapping[str, torch.Tensor]) -> bytes:
    """``state`` as safetensors bytes (for a download button, no file on disk)."""
    from safetensors.torch import save

    return save(_tensors_for_file(state))


def masks_bytes(masks: Mapping[str, torch.Tensor]) -> bytes:
    """``masks`` as the bytes of a :func:`save_masks` file (for a download button)."""
    from safetensors.torch import save

    check_masks(masks)
    return save(_tensors_for_file({n: m.to(torch.uint8) for n, m in masks.items()}),
                metadata={"format": MASKS_FORMAT})
