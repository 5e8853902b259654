"""FLOPs of a token-pruned transformer, per block: projections and MLP grow with tokens, attention
with tokens^2. Counted as ``torch.utils.flop_counter.FlopCounterMode`` counts (2 per multiply-add,
matmuls only), and checked against it by :func:`count_flops` on the physically shortened model."""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Sequence

import pandas as pd
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from prunescope.explorer.core.forward import eval_mode
from prunescope.explorer.core.setting import TokenSetting
from prunescope.explorer.tokens.adapters import TokenAdapter
from prunescope.explorer.tokens.budget import kept_count
from prunescope.explorer.tokens.strategies import get_strategy


def block_linear_macs(block: nn.Module) -> int:
    """Multiply-adds per token of every linear map in ``block`` (Linear weights, MHA in-projection)."""
    macs = 0
    for module in block.modules():
        if isinstance(module, nn.Linear):
            macs += module.weight.numel()
        elif isinstance(module, nn.MultiheadAttention):
            if module._qkv_same_embed_dim:
                macs += module.in_proj_weight.numel()
            else:
                macs += module.q_proj_weight.numel() + module.k_proj_weight.numel() + module.v_proj_weight.numel()
    return macs


def block_flops(block: nn.Module, adapter: TokenAdapter, tokens: int) -> tuple[int, int]:
    """(linear FLOPs, attention FLOPs) of ``block`` processing ``tokens`` tokens (one image)."""
    _, attn_width = adapter.attention_dims(block)
    return 2 * tokens * block_linear_macs(block), 4 * tokens * tokens * attn_width


def token_counts(adapter: TokenAdapter, setting: TokenSetting, patches: int) -> list[tuple[int, int, bool]]:
    """Per block ``(tokens entering, tokens processed, prunes here)`` for one image of ``patches``
    patch tokens: ``ceil(keep * patches)`` kept (+ CLS, + the strategy's extra tokens)."""
    strategy = get_strategy(setting.strategy)
    has_cls = int(adapter.cls_index is not None)
    present, extra, out = patches, 0, []
    for b, keep in enumerate(setting.keep):
        entering = present + extra + has_cls
        k = kept_count(keep, patches)
        prunes = present > k and keep < (setting.keep[b - 1] if b else 1.0)
        if prunes:
            present, extra = k, strategy.extra_tokens
        out.append((entering, present + extra + has_cls, prunes))
    return out


def token_flops(
    model: nn.Module, adapter: TokenAdapter, setting: TokenSetting, patches: int | None = None,
    tokens_per_image: Sequence[Sequence[int]] | torch.Tensor | None = None,
) -> pd.DataFrame:
    """Per-block FLOPs (one image) of ``model`` under ``setting`` beside the dense model.

    Columns: ``block``, ``tokens``, ``dense_tokens``, ``linear_flops``, ``attention_flops``,
    ``flops`` (the block with that many tokens physically present), ``dense_flops``, and
    ``overhead_flops``: the criterion's own matmuls at pruning blocks (a key bias, ToMe's
    proportional attention or padding, is added inside the block's one attention and costs
    nothing extra here). ``tokens_per_image`` (images, blocks), e.g. a record's per-image counts of a
    per-image strategy, replaces the budget's counts and the table gives the mean over images.
    """
    patches = patches if patches is not None else adapter.num_patches
    if patches is None:
        raise ValueError("the number of patch tokens is unknown: pass patches= or find the adapter with example=")
    strategy = get_strategy(setting.strategy)
    blocks = adapter.blocks(model)
    has_cls = adapter.cls_index is not None
    counts = token_counts(adapter, setting, patches)
    per_image = None
    if tokens_per_image is not None:
        per_image = torch.as_tensor(tokens_per_image).long()
        if per_image.dim() != 2 or per_image.shape[1] != len(blocks):
            raise ValueError(f"tokens_per_image must be (images, {len(blocks)}), got {tuple(per_image.shape)}")
    rows = []
    for b, (block, (entering, tokens, prunes)) in enumerate(zip(blocks, counts)):
        dense_lin, dense_att = block_flops(block, adapter, patches + has_cls)
        samples = [tokens] if per_image is None else per_image[:, b].tolist()
        lin = att = overhead = 0.0
        width, attn_width = adapter.attention_dims(block)
        for n in samples:
            lf, af = block_flops(block, adapter, n)
            lin, att = lin + lf, att + af
        lin, att = lin / len(samples), att / len(samples)
        if prunes:
            heads = adapter.heads(block) if adapter.has_attention else 1
            overhead += strategy.selection_flops(entering, kept_count(setting.keep[b], patches), width, attn_width,
                                                 heads, has_cls)
        rows.append({
            "block": b, "name": adapter.block_names[b], "tokens": sum(samples) / len(samples),
            "dense_tokens": patches + has_cls, "linear_flops": lin, "attention_flops": att,
            "flops": lin + att, "dense_flops": dense_lin + dense_att, "overhead_flops": overhead,
        })
    return pd.DataFrame(rows)


@contextlib.contextmanager
def _reference_paths() -> ContextManager[None]:
    """PyTorch paths FlopCounterMode can count: SDPA's math kernel, no fused encoder layer."""
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


def count_flops(
    model: nn.Module, inputs: torch.Tensor, params: dict[str, torch.Tensor] | None = None,
    intervention: Callable[[], ContextManager] | None = None, block_names: Sequence[str] = (),
) -> dict[str, int]:
    """FlopCounterMode's count of one forward (total and per named module) under ``intervention``.

    A measurement for checks and benchmarks: it switches PyTorch's global MHA fast path off for
    its duration (FlopCounterMode cannot see inside the fused kernels) and restores it.
    """
    with eval_mode(model), torch.no_grad(), _reference_paths(), FlopCounterMode(display=False) as counter:
        with intervention() if intervention is not None else contextlib.nullcontext():
            functional_call(model, params or {}, (inputs,), strict=False)
    per_module = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    root = type(model).__name__
    out = {"total": counter.get_total_flops()}
    for name in block_names:
        out[name] = int(per_module.get(f"{root}.{name}", 0))
    return out


def outside_flops(model: nn.Module, adapter: TokenAdapter, example: torch.Tensor) -> int:
    """FLOPs of one image outside the blocks (patch embedding, head), from one counted forward."""
    counted = count_flops(model, example[:1], block_names=adapter.block_names)
    return counted["total"] - sum(counted[n] for n in adapter.block_names)


def token_cost(model: nn.Module, adapter: TokenAdapter, setting: TokenSetting, example: torch.Tensor,
               outside: int | None = None, **kwargs) -> dict:
    """Whole-model FLOPs per image: ``{"table", "flops", "dense_flops", "overhead_flops", "reduction"}``.

    ``outside``: :func:`outside_flops` when the caller already has it (it does not depend on the
    token setting); counted on ``example`` otherwise."""
    table = token_flops(model, adapter, setting, **kwargs)
    outside = outside_flops(model, adapter, example) if outside is None else outside
    flops = outside + float(table["flops"].sum())
    dense = outside + float(table["dense_flops"].sum())
    return {"table": table, "flops": flops, "dense_flops": dense,
            "overhead_flops": float(table["overhead_flops"].sum()), "reduction": dense / flops}
