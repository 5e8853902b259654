"""What a token strategy sees at one pruning block: the tokens, their bookkeeping and lazy criteria."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from prunescope.explorer.tokens.adapters import TokenAdapter

#: Plan destinations: drop the token, or merge it into the one recycled token.
DROP = -1
RECYCLE = -2


def pixel_entropy(images: torch.Tensor, grid: tuple[int, int], bins: int) -> torch.Tensor | None:
    """Shannon entropy (nats) of each patch's grey-level histogram, (B, rows * cols) in raster order.

    ``images`` (B, C, H, W) is scaled to [0, 1] per image; None when H, W do not tile by ``grid``.
    """
    B, C, H, W = images.shape
    rows, cols = grid
    if H % rows or W % cols:
        return None
    grey = images.detach().double().mean(1)
    lo = grey.flatten(1).min(1).values[:, None, None]
    hi = grey.flatten(1).max(1).values[:, None, None]
    grey = (grey - lo) / (hi - lo).clamp_min(1e-12)
    level = (grey * bins).long().clamp_(0, bins - 1)
    ph, pw = H // rows, W // cols
    level = level.reshape(B, rows, ph, cols, pw).permute(0, 1, 3, 2, 4).reshape(B, rows * cols, ph * pw)
    hist = torch.zeros(B, rows * cols, bins, dtype=torch.float64).scatter_add_(2, level, torch.ones_like(level, dtype=torch.float64))
    p = hist / (ph * pw)
    return -(p * torch.log(p.clamp_min(1e-300))).sum(-1)


@dataclass
class SelectionContext:
    """One pruning block's view for a strategy. Patch-side tokens are the sequence without CLS.

    ``index`` (B, n): original patch position (-1 for a recycled or padding token); ``size``
    (B, n): how many original patches a token stands for (0 for padding); ``valid`` (B, n):
    False for padding; ``k``: patch tokens to keep; ``stage``: pruning steps already taken in this
    forward; ``image``: the model's input when it is an image batch (B, C, H, W), else None.
    """

    adapter: TokenAdapter
    block: nn.Module
    block_index: int
    x: torch.Tensor  # (B, N, C) the whole sequence
    cls_pos: int | None  # position of CLS in x (0 or N-1), or None
    index: torch.Tensor
    size: torch.Tensor
    valid: torch.Tensor
    k: int
    grid: tuple[int, int] | None
    bias: torch.Tensor | None  # (B, N) key bias of this block's attention
    generator: torch.Generator
    stage: int = 0
    image: torch.Tensor | None = None
    _cache: dict = field(default_factory=dict)

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    @property
    def n(self) -> int:
        return self.index.shape[1]

    @property
    def candidates(self) -> torch.Tensor:
        """(B, n) tokens a strategy may keep or drop: real patch tokens (not recycled, not padding)."""
        if "candidates" not in self._cache:
            self._cache["candidates"] = self.valid & (self.index >= 0)
        return self._cache["candidates"]

    @property
    def patch_slots(self) -> slice:
        """Where the patch-side tokens are in ``x``."""
        if self.cls_pos is None:
            return slice(0, self.x.shape[1])
        return slice(1, None) if self.cls_pos == 0 else slice(0, self.x.shape[1] - 1)

    def require_attention(self, who: str) -> None:
        if not self.adapter.has_attention:
            raise ValueError(
                f"token strategy {who!r} reads attention, but {type(self.block).__name__} blocks have none; "
                "use 'random' or 'merge'"
            )

    def require_grid(self, who: str) -> tuple[int, int]:
        """The patch grid (rows, cols), or a ValueError when the patches do not form one."""
        if self.grid is None:
            raise ValueError(f"token strategy {who!r} needs the patch grid (rows, cols); the patch count is not square "
                             "and the model declares no patch_embed.grid_size")
        return self.grid

    def importance(self) -> torch.Tensor:
        """(B, n) attention each patch-side token gets: from CLS (mean over heads), or without a
        CLS token the mean attention it receives over the (valid) queries and heads."""
        if "importance" not in self._cache:
            self.require_attention("attention criterion")
            slots = self.patch_slots
            if self.cls_pos is not None:
                q = torch.tensor([self.cls_pos if self.cls_pos == 0 else self.x.shape[1] - 1])
                attn = self.adapter.attention(self.block, self.x, self.bias, queries=q)  # (B, H, 1, N)
                score = attn[:, :, 0, slots].mean(1)
            else:
                attn = self.adapter.attention(self.block, self.x, self.bias)  # (B, H, N, N)
                w = self.valid.to(attn.dtype)[:, None, :, None]
                score = ((attn * w).sum(2) / w.sum(2).clamp_min(1)).mean(1)
            self._cache["importance"] = score.masked_fill(~self.valid, 0.0)
        return self._cache["importance"]

    def keys(self) -> torch.Tensor:
        """(B, n, D) the block's keys of the patch-side tokens, averaged over heads (ToMe's metric)."""
        return self.adapter.keys(self.block, self.x)[:, self.patch_slots]

    def patch_entropy(self, bins: int, source: str = "auto") -> torch.Tensor:
        """(B, n) information entropy per token: of its image patch's pixels when the input is an
        image that tiles by the grid (``source`` "pixels"/"auto"), else of its softmaxed features."""
        ent = None
        if source in ("auto", "pixels") and self.image is not None and self.image.dim() == 4 and self.grid:
            per_patch = pixel_entropy(self.image, self.grid, bins)
            if per_patch is not None:
                ent = per_patch.gather(1, self.index.clamp_min(0)).to(self.x.dtype)
        if ent is None:
            if source == "pixels":
                raise ValueError("entropy_source='pixels' needs image inputs (B, C, H, W) that tile by the patch grid")
            p = self.x[:, self.patch_slots].detach().softmax(-1)
            ent = -(p * p.clamp_min(1e-30).log()).sum(-1)
        return ent.masked_fill(~self.candidates, 0.0)
