"""Find the transformer blocks of a user's model, by duck typing, and speak their language.

A :class:`TokenAdapter` knows where a model's blocks are, how their input sequence is laid out
(batch first or sequence first, where the CLS token is), how to compute a block's attention
probabilities ``softmax(q k^T / sqrt(d) + bias)`` explicitly from the block's own weights (as
``torch.func.functional_call`` swapped them in), and how to add a per-key bias (ToMe's
proportional attention ``log(size)``, ``-inf`` for padding) to the block's attention.

Three kinds are recognised, in this order:

* timm layout: a ``ModuleList`` named ``blocks`` whose modules have ``attn.qkv``, ``attn.proj`` and
  ``attn.num_heads`` (``norm1`` before the attention when present); CLS at index 0 when the
  model has a ``cls_token`` attribute. The bias is added by swapping ``attn.forward`` for one that
  computes the biased attention (fused ``scaled_dot_product_attention``) while the bias is set.
* ``torch.nn.TransformerEncoder`` (any ``nn.TransformerEncoderLayer``: pre- or post-norm,
  ``batch_first`` True or False). Attention is recomputed from ``self_attn.in_proj_weight``.
  PyTorch's fused fast path (``torch._transformer_encoder_layer_fwd``) is never disabled
  globally: it is off exactly for the layers that carry one of our hooks (PyTorch itself skips it
  for a layer with hooks), so layers before the first pruned block run as in the dense model and
  ``keep=1`` registers no hook at all. The bias travels as the layer's float ``src_mask``.
* any other ``ModuleList`` named ``blocks`` (attention-free token mixers): tokens can be dropped
  or merged, but strategies that need attention refuse it with a ValueError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunescope.explorer.core.forward import eval_mode


class _SwappedForward:
    """A hook-like handle: ``module.forward`` is ``forward`` (an instance attribute) until
    ``remove()``, which restores what was there (a user's own instance ``forward`` included)."""

    _MISSING = object()

    def __init__(self, module: nn.Module, forward) -> None:
        self.module = module
        self.previous = module.__dict__.get("forward", self._MISSING)
        module.forward = forward

    def remove(self) -> None:
        if self.previous is self._MISSING:
            self.module.__dict__.pop("forward", None)
        else:
            self.module.forward = self.previous


def _is_timm_block(module: nn.Module) -> bool:
    attn = getattr(module, "attn", None)
    return attn is not None and all(hasattr(attn, a) for a in ("qkv", "proj", "num_heads"))


@dataclass(frozen=True)
class TokenAdapter:
    """How to find, read and shorten the token sequence of one model's blocks.

    ``block_names`` are module names as in ``model.named_modules()``; ``cls_index`` is 0 (first),
    -1 (last) or None; ``num_tokens`` is the sequence length entering the first block (CLS
    included) when it is known without running the model; ``grid`` the (rows, cols) of the
    patch tokens when known.
    """

    kind: str
    block_names: tuple[str, ...]
    cls_index: int | None
    num_tokens: int | None = None
    grid: tuple[int, int] | None = None
    seq_first: bool = False

    has_attention = True

    @property
    def num_blocks(self) -> int:
        return len(self.block_names)

    @property
    def num_patches(self) -> int | None:
        """Patch tokens entering the first block (``num_tokens`` without CLS), if known."""
        if self.num_tokens is None:
            return None
        return self.num_tokens - (self.cls_index is not None)

    def patch_grid(self, patches: int) -> tuple[int, int] | None:
        """(rows, cols) of ``patches`` tokens: the known grid, else a square one, else None."""
        if self.grid is not None and self.grid[0] * self.grid[1] == patches:
            return self.grid
        side = math.isqrt(patches)
        return (side, side) if side * side == patches else None

    def blocks(self, model: nn.Module) -> list[nn.Module]:
        modules = dict(model.named_modules())
        return [modules[n] for n in self.block_names]

    # ---- the block's input -------------------------------------------------------------------
    def block_input(self, args: tuple, kwargs: dict) -> torch.Tensor:
        """The block's token sequence as (B, N, C)."""
        x = args[0] if args else kwargs["src"]
        return x.transpose(0, 1) if self.seq_first else x

    def with_block_input(self, args: tuple, kwargs: dict, x: torch.Tensor) -> tuple[tuple, dict]:
        """``args, kwargs`` with the sequence replaced by ``x`` (B, N, C)."""
        x = x.transpose(0, 1) if self.seq_first else x
        if args:
            return (x, *args[1:]), kwargs
        return args, {**kwargs, "src": x}

    # ---- attention ---------------------------------------------------------------------------
    def heads(self, block: nn.Module) -> int:
        return int(block.attn.num_heads)

    def qk(self, block: nn.Module, x: torch.Tensor, queries: torch.Tensor | None = None):
        """``(q, k, scale)``: q (B, H, nq, D) for the ``queries`` positions (all if None), k (B, H, N, D)."""
        attn = block.attn
        h = block.norm1(x) if hasattr(block, "norm1") else x
        B, N, C = h.shape
        H = self.heads(block)
        w, b = attn.qkv.weight, attn.qkv.bias
        d = w.shape[0] // 3
        hq = h if queries is None else h[:, queries]
        q = F.linear(hq, w[:d], None if b is None else b[:d])
        k = F.linear(h, w[d : 2 * d], None if b is None else b[d : 2 * d])
        q = q.reshape(B, hq.shape[1], H, d // H).transpose(1, 2)
        k = k.reshape(B, N, H, d // H).transpose(1, 2)
        if hasattr(attn, "q_norm"):
            q, k = attn.q_norm(q), attn.k_norm(k)
        scale = float(getattr(attn, "scale", (d // H) ** -0.5))
        return q, k, scale

    def attention(
        self, block: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None,
        queries: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attention probabilities (B, heads, nq, N) of ``block`` on its input ``x`` (B, N, C),
        computed explicitly: ``softmax(q k^T * scale + bias)`` with ``bias`` (B, N) over keys."""
        q, k, scale = self.qk(block, x, queries)
        logits = (q @ k.transpose(-2, -1)) * scale
        if bias is not None:
            logits = logits + bias[:, None, None, :].to(logits.dtype)
        return logits.softmax(-1)

    def keys(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Keys of ``block`` on ``x`` averaged over heads (B, N, D): ToMe's similarity metric."""
        _, k, _ = self.qk(block, x, queries=x.new_zeros(0, dtype=torch.long))
        return k.mean(1)

    def attention_dims(self, block: nn.Module) -> tuple[int, int]:
        """(model width E, attention width d = heads * head dim) of ``block``."""
        w = block.attn.qkv.weight
        return int(w.shape[1]), int(w.shape[0] // 3)

    def install_bias(self, block: nn.Module, get_bias) -> list[Any]:
        """Make ``block``'s attention add ``get_bias()`` (B, N) to its logits while it is not None;
        returns handles whose ``remove()`` undoes it. timm layout: ``attn.forward`` is swapped (on
        the instance, for the life of the handle) for one that computes the biased attention from
        ``qkv`` and ``proj`` with the fused kernel, and calls the original when the bias is None;
        so a biased block computes its attention once, not twice."""
        attn = block.attn
        original = attn.forward

        def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            bias = get_bias()
            if bias is None:
                return original(x, *args, **kwargs)
            B, N, C = x.shape
            H = int(attn.num_heads)
            q, k, v = attn.qkv(x).reshape(B, N, 3, H, -1).permute(2, 0, 3, 1, 4).unbind(0)
            if hasattr(attn, "q_norm"):
                q, k = attn.q_norm(q), attn.k_norm(k)
            scale = float(getattr(attn, "scale", q.shape[-1] ** -0.5))
            mask = bias[:, None, None, :].to(q.dtype)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
            return attn.proj(out.transpose(1, 2).reshape(B, N, -1))

        return [_SwappedForward(attn, forward)]

    def bias_kwargs(self, block: nn.Module, args: tuple, kwargs: dict, bias: torch.Tensor | None, shortened: bool):
        """``args, kwargs`` for the block call given the current key ``bias`` (timm: unchanged)."""
        return args, kwargs


@dataclass(frozen=True)
class TorchEncoderAdapter(TokenAdapter):
    """``nn.TransformerEncoder`` layers (pre-/post-norm, batch first or not)."""

    def heads(self, block: nn.Module) -> int:
        return int(block.self_attn.num_heads)

    def qk(self, block: nn.Module, x: torch.Tensor, queries: torch.Tensor | None = None):
        mha = block.self_attn
        h = block.norm1(x) if block.norm_first else x
        B, N, E = h.shape
        H = mha.num_heads
        if mha._qkv_same_embed_dim:
            wq, wk = mha.in_proj_weight[:E], mha.in_proj_weight[E : 2 * E]
        else:
            wq, wk = mha.q_proj_weight, mha.k_proj_weight
        b = mha.in_proj_bias
        hq = h if queries is None else h[:, queries]
        q = F.linear(hq, wq, None if b is None else b[:E])
        k = F.linear(h, wk, None if b is None else b[E : 2 * E])
        q = q.reshape(B, hq.shape[1], H, E // H).transpose(1, 2)
        k = k.reshape(B, N, H, E // H).transpose(1, 2)
        return q, k, (E // H) ** -0.5

    def attention_dims(self, block: nn.Module) -> tuple[int, int]:
        e = int(block.self_attn.embed_dim)
        return e, e

    def install_bias(self, block: nn.Module, get_bias) -> list[Any]:
        return []

    def bias_kwargs(self, block, args, kwargs, bias, shortened):
        user_mask = kwargs.get("src_mask", args[1] if len(args) > 1 else None)
        padding = kwargs.get("src_key_padding_mask", args[2] if len(args) > 2 else None)
        if shortened and (user_mask is not None or padding is not None):
            raise ValueError(
                "token pruning cannot shorten a sequence that comes with its own src_mask or "
                "src_key_padding_mask (they are sized for the full sequence); call the model without them"
            )
        if bias is None:
            return args, kwargs
        B, N = bias.shape
        H = self.heads(block)
        mask = bias[:, None, None, :].expand(B, H, N, N).reshape(B * H, N, N)
        return args[:1], {**kwargs, "src_mask": mask}


@dataclass(frozen=True)
class SequenceAdapter(TokenAdapter):
    """Attention-free blocks that accept any sequence length (B, N, C): drop or merge only."""

    has_attention = False

    def attention(self, block, x, bias=None, queries=None):  # pragma: no cover - guarded by strategies
        raise ValueError(f"{type(block).__name__} blocks have no attention to read")

    def keys(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return x

    def attention_dims(self, block: nn.Module) -> tuple[int, int]:
        return 0, 0

    def install_bias(self, block, get_bias) -> list[Any]:
        return []


def _find_cls(model: nn.Module) -> bool:
    return any(name == "cls_token" or name.endswith(".cls_token") for name, _ in model.named_parameters()) or hasattr(
        model, "cls_token"
    )


def _timm_tokens(model: nn.Module) -> tuple[int | None, tuple[int, int] | None]:
    patch = getattr(model, "patch_embed", None)
    grid = getattr(patch, "grid_size", None)
    grid = (int(grid[0]), int(grid[1])) if grid is not None else None
    patches = getattr(patch, "num_patches", None)
    if patches is None and grid is not None:
        patches = grid[0] * grid[1]
    return (None if patches is None else int(patches)), grid


def find_adapter(
    model: nn.Module, *, cls_index: int | None | str = "auto", example: torch.Tensor | None = None,
) -> TokenAdapter:
    """The :class:`TokenAdapter` for ``model``'s transformer blocks, found by duck typing.

    ``cls_index`` is 0 or -1 (position of the CLS token), None (no CLS token) or "auto" (0 when
    the model has a ``cls_token`` attribute or parameter, else None). ``example`` (a batch of
    inputs) lets the adapter measure the sequence length when the model does not declare it.
    A model without transformer blocks gets a ValueError saying what was looked for.
    """
    if cls_index == "auto":
        cls_index = 0 if _find_cls(model) else None
    if cls_index not in (0, -1, None):
        raise ValueError(f"cls_index must be 0 (first token), -1 (last token) or None, got {cls_index!r}")
    adapter: TokenAdapter | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.TransformerEncoder):
            layers = [f"{name}.layers.{i}" if name else f"layers.{i}" for i in range(len(module.layers))]
            for layer in module.layers:
                if not isinstance(layer, nn.TransformerEncoderLayer):
                    raise ValueError(f"TransformerEncoder layers must be nn.TransformerEncoderLayer, got {type(layer).__name__}")
                if layer.self_attn.bias_k is not None or layer.self_attn.add_zero_attn:
                    raise ValueError("token pruning does not support MultiheadAttention with add_bias_kv or add_zero_attn")
            seq_first = not module.layers[0].self_attn.batch_first
            adapter = TorchEncoderAdapter("torch_encoder", tuple(layers), cls_index, seq_first=seq_first)
            break
        if name.split(".")[-1] == "blocks" and isinstance(module, nn.ModuleList) and len(module):
            names = tuple(f"{name}.{i}" for i in range(len(module)))
            if all(_is_timm_block(b) for b in module):
                patches, grid = _timm_tokens(model)
                tokens = None if patches is None else patches + (cls_index is not None)
                adapter = TokenAdapter("timm", names, cls_index, tokens, grid)
            else:
                adapter = SequenceAdapter("sequence", names, cls_index)
            break
    if adapter is None:
        raise ValueError(
            f"{type(model).__name__} has no transformer blocks: token budgets need an nn.TransformerEncoder "
            "or a ModuleList `blocks` (timm layout: blk.attn.qkv, blk.attn.proj, blk.attn.num_heads)"
        )
    if example is not None and adapter.num_tokens is None:
        adapter = replace(adapter, num_tokens=measure_tokens(model, adapter, example))
    return adapter


def measure_tokens(model: nn.Module, adapter: TokenAdapter, example: torch.Tensor) -> int:
    """Sequence length entering ``model``'s first block on ``example`` (one short forward)."""
    seen: list[int] = []
    first = adapter.blocks(model)[0]

    def pre(module, args, kwargs):
        seen.append(adapter.block_input(args, kwargs).shape[1])

    handle = first.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        with eval_mode(model), torch.no_grad():
            model(example[:1])
    finally:
        handle.remove()
    return seen[0]
