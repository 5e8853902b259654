"""Small transformers written here (no downloads): a timm-layout ViT, nn.TransformerEncoder ViTs
(pre-/post-norm, batch first or not, with or without CLS) and an attention-free token mixer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PATCH, SIDE, DIM, HEADS, DEPTH = 2, 16, 32, 4, 4
GRID = SIDE // PATCH  # 8 x 8 = 64 patch tokens


class PatchEmbed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, DIM, PATCH, PATCH)
        self.grid_size = (GRID, GRID)
        self.num_patches = GRID * GRID

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, P, C)


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.num_heads = HEADS
        self.scale = (DIM // HEADS) ** -0.5
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.proj = nn.Linear(DIM, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, HEADS, C // HEADS).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)  # fused: the model never needs its weights
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(DIM, 2 * DIM), nn.GELU(), nn.Linear(2 * DIM, DIM)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm1, self.attn, self.norm2, self.mlp = nn.LayerNorm(DIM), Attention(), nn.LayerNorm(DIM), Mlp()

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TimmViT(nn.Module):
    """timm's layout: patch_embed, cls_token, pos_embed, blocks, norm, head (CLS or mean pool)."""

    def __init__(self, pool: str = "cls", classes: int = 5) -> None:
        super().__init__()
        self.pool = pool
        self.patch_embed = PatchEmbed()
        self.cls_token = nn.Parameter(torch.randn(1, 1, DIM) * 0.5)
        self.pos_embed = nn.Parameter(torch.randn(1, GRID * GRID + 1, DIM) * 0.5)
        self.blocks = nn.ModuleList(Block() for _ in range(DEPTH))
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, classes)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return self.head(x[:, 0] if self.pool == "cls" else x[:, 1:].mean(1))


class EncoderViT(nn.Module):
    """A ViT on nn.TransformerEncoder; CLS first, last, or none (mean pool)."""

    def __init__(self, norm_first: bool, batch_first: bool, cls: str | None = "first", classes: int = 5) -> None:
        super().__init__()
        self.batch_first, self.cls = batch_first, cls
        self.patch = nn.Conv2d(3, DIM, PATCH, PATCH)
        if cls is not None:
            self.cls_token = nn.Parameter(torch.randn(1, 1, DIM) * 0.5)
        self.pos = nn.Parameter(torch.randn(1, GRID * GRID + (cls is not None), DIM) * 0.5)
        layer = nn.TransformerEncoderLayer(DIM, HEADS, 2 * DIM, dropout=0.0, batch_first=batch_first, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, DEPTH, enable_nested_tensor=False)
        self.head = nn.Linear(DIM, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        if self.cls == "first":
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)
        elif self.cls == "last":
            x = torch.cat([x, self.cls_token.expand(x.shape[0], -1, -1)], 1)
        x = x + self.pos
        x = self.encoder(x if self.batch_first else x.transpose(0, 1))
        x = x if self.batch_first else x.transpose(0, 1)
        pooled = {"first": lambda: x[:, 0], "last": lambda: x[:, -1], None: lambda: x.mean(1)}[self.cls]()
        return self.head(pooled)


class MixBlock(nn.Module):
    """Attention-free token mixing (any sequence length): x + mlp(norm(x + mean over tokens))."""

    def __init__(self) -> None:
        super().__init__()
        self.norm, self.mlp = nn.LayerNorm(DIM), Mlp()

    def forward(self, x):
        return x + self.mlp(self.norm(x + x.mean(1, keepdim=True)))


class MixerNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed()
        self.blocks = nn.ModuleList(MixBlock() for _ in range(DEPTH))
        self.head = nn.Linear(DIM, 5)

    def forward(self, x):
        x = self.patch_embed(x)
        for blk in self.blocks:
            x = blk(x)
        return self.head(x.mean(1))


def seeded(build, seed: int = 0) -> nn.Module:
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return build().eval()
    finally:
        torch.random.set_rng_state(state)


MODEL_KINDS = {
    "timm_cls": lambda: TimmViT("cls"),
    "timm_mean": lambda: TimmViT("mean"),
    "enc_pre_bf_cls": lambda: EncoderViT(True, True, "first"),
    "enc_post_bf_cls": lambda: EncoderViT(False, True, "first"),
    "enc_pre_sf_cls": lambda: EncoderViT(True, False, "first"),
    "enc_post_sf_nocls": lambda: EncoderViT(False, False, None),
    "enc_pre_bf_nocls": lambda: EncoderViT(True, True, None),
    "enc_post_bf_lastcls": lambda: EncoderViT(False, True, "last"),
}


def make_model(kind: str) -> nn.Module:
    return seeded(MODEL_KINDS[kind], seed=sum(map(ord, kind)))


def make_images(n: int = 6, seed: int = 1) -> torch.Tensor:
    """Images with a bright square somewhere on a noisy background (where it is varies)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, SIDE, SIDE, generator=gen) * 0.3
    for i in range(n):
        r, c = torch.randint(0, SIDE - 6, (2,), generator=gen).tolist()
        x[i, :, r : r + 6, c : c + 6] += torch.rand(3, 1, 1, generator=gen) + 0.5
    return x




def adapter_for(model: nn.Module, kind: str, example: torch.Tensor):
    """The adapter of a test model (CLS position given by hand where it is not first)."""
    from prunescope.explorer.tokens import find_adapter

    cls = {"enc_post_sf_nocls": None, "enc_pre_bf_nocls": None, "enc_post_bf_lastcls": -1}.get(kind, "auto")
    return find_adapter(model, cls_index=cls, example=example)


def hook_count(model: nn.Module) -> int:
    """Hooks of any kind left on any submodule."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def module_attributes(model: nn.Module) -> dict[str, set[str]]:
    return {name: set(vars(m)) for name, m in model.named_modules()}
