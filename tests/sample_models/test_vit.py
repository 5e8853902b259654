"""The sample ViT: timm's layout, attention against torch's MultiheadAttention, any token count."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunescope.sample_models import get_sample_model
from prunescope.sample_models.vit import Attention, Block, VisionTransformer


@pytest.fixture(scope="module")
def vit() -> VisionTransformer:
    return get_sample_model("shapes_vit").load("trained")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return get_sample_model("shapes_vit").data("test")[0][:16]


def _mha_like(attn: Attention) -> nn.MultiheadAttention:
    """torch's MultiheadAttention with ``attn``'s weights: the reference implementation."""
    dim = attn.qkv.in_features
    mha = nn.MultiheadAttention(dim, attn.num_heads, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(attn.qkv.weight)
        mha.in_proj_bias.copy_(attn.qkv.bias)
        mha.out_proj.weight.copy_(attn.proj.weight)
        mha.out_proj.bias.copy_(attn.proj.bias)
    return mha.eval()


def test_layout_is_timms(vit):
    C = vit.embed_dim
    assert isinstance(vit.patch_embed.proj, nn.Conv2d) and vit.patch_embed.proj.stride == (4, 4)
    assert vit.patch_embed.num_patches == 64 and vit.patch_embed.grid_size == (8, 8)
    assert vit.cls_token.shape == (1, 1, C) and vit.pos_embed.shape == (1, 65, C)
    assert isinstance(vit.blocks, nn.ModuleList) and len(vit.blocks) >= 4
    for block in vit.blocks:
        attn = block.attn
        assert attn.num_heads >= 4 and attn.num_heads * attn.head_dim == C
        assert attn.scale == pytest.approx(attn.head_dim**-0.5)
        assert (attn.qkv.in_features, attn.qkv.out_features) == (C, 3 * C)
        assert (attn.proj.in_features, attn.proj.out_features) == (C, C)
        assert isinstance(block.norm1, nn.LayerNorm) and isinstance(block.norm2, nn.LayerNorm)
        assert isinstance(block.mlp.fc1, nn.Linear) and isinstance(block.mlp.act, nn.GELU)
        assert block.mlp.fc2.out_features == C
    assert isinstance(vit.norm, nn.LayerNorm) and vit.head.in_features == C


def test_attention_matches_torch_multihead_attention(vit, images):
    block = vit.blocks[1]
    with torch.no_grad():
        x = block.norm1(vit.forward_features(images))  # (B, 65, C), realistic activations
        mha = _mha_like(block.attn)
        ref_out, ref_weights = mha(x, x, x, need_weights=True, average_attn_weights=False)
        weights = block.attn.attention_weights(x)
        out = block.attn(x)
    assert weights.shape == (16, block.attn.num_heads, 65, 65)
    torch.testing.assert_close(weights.sum(-1), torch.ones(16, block.attn.num_heads, 65))
    torch.testing.assert_close(weights, ref_weights, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)


def test_explicit_attention_path_gives_the_fused_output(vit, images):
    with torch.no_grad():
        fused = vit(images)
        for block in vit.blocks:
            block.attn.fused_attn = False
        try:
            explicit = vit(images)
        finally:
            for block in vit.blocks:
                block.attn.fused_attn = True
    assert (fused - explicit).abs().max() < 1e-5


def test_a_block_on_fewer_tokens_equals_attention_masked_to_them(vit, images):
    block: Block = vit.blocks[2]
    keep = torch.tensor([0, 3, 7, 8, 20, 33, 40, 64])  # CLS and some patch tokens
    with torch.no_grad():
        x = vit.forward_features(images)  # (B, 65, C)
        short = block(x[:, keep])  # (B, 8, C)
        # reference: the full sequence, keys outside ``keep`` masked out, rows of ``keep`` read
        h = block.norm1(x)
        masked = torch.ones(65, dtype=torch.bool)
        masked[keep] = False
        attn_out, _ = _mha_like(block.attn)(h, h, h, key_padding_mask=masked.expand(len(x), 65))
        y = x + attn_out
        ref = (y + block.mlp(block.norm2(y)))[:, keep]
    assert short.shape == (16, 8, vit.embed_dim)
    torch.testing.assert_close(short, ref, atol=1e-5, rtol=1e-5)


def test_forward_runs_with_the_sequence_shortened_between_blocks(vit, images):
    def keep_half(module, args):
        (x,) = args
        return (x[:, : 1 + (x.shape[1] - 1) // 2],)  # CLS + the first half of the patch tokens

    handle = vit.blocks[2].register_forward_pre_hook(keep_half)
    try:
        with torch.no_grad():
            tokens = vit.forward_features(images)
            logits = vit(images)
    finally:
        handle.remove()
    assert tokens.shape == (16, 33, vit.embed_dim) and logits.shape == (16, vit.num_classes)
    with torch.no_grad():
        assert not torch.allclose(logits, vit(images))  # the dropped tokens mattered


def test_forward_is_the_head_of_the_normalised_cls_token(vit, images):
    with torch.no_grad():
        tokens = vit.forward_features(images)
        pre = vit.forward_head(tokens, pre_logits=True)
        logits = vit(images)
    assert pre.shape == (16, vit.embed_dim)
    torch.testing.assert_close(pre, tokens[:, 0])
    torch.testing.assert_close(logits, vit.head(tokens[:, 0]))
    # the patch embedding is the conv, flattened row-major (token 1 + r * 8 + c is patch (r, c))
    with torch.no_grad():
        median = images.reshape(16, 3, -1).quantile(0.5, dim=2, interpolation="lower")  # (B, 3)
        x = (images - median[:, :, None, None]).abs() * 4.0  # background subtracted
        conv = vit.patch_embed.proj(x)  # (B, C, 8, 8)
        torch.testing.assert_close(vit.patch_embed(images)[:, 1 * 8 + 5], conv[:, :, 1, 5])


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="num_heads must divide dim=64, got 5"):
        Attention(64, 5)
    with pytest.raises(ValueError, match="patch_size must divide img_size=32, got 5"):
        VisionTransformer(patch_size=5)
