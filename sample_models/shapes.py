"""Procedurally generated 32x32 RGB shapes on a cluttered background (numpy only, deterministic).

Each image holds one object of a class (circle, square, triangle, cross, ring, bar) at a
random position, scale, rotation and colour, drawn anti-aliased over a random background colour
with low-contrast clutter (soft blobs, faint lines, pixel noise). Where the object lies varies,
so which patch tokens a ViT keeps matters (token-pruning experiments, e.g. EViT, Liang et al. 2022).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from prunescope.sample_models._registry import SampleModel, register_sample_model
from prunescope.sample_models.digits import seeded_build
from prunescope.sample_models.vit import VisionTransformer

#: Class names, in label order.
CLASS_NAMES = ("circle", "square", "triangle", "cross", "ring", "bar")
IMAGE_SIZE = 32
#: Patch size of the sample ViT: the image is an 8x8 grid of 4x4-pixel patch tokens.
PATCH_SIZE = 4
GRID = IMAGE_SIZE // PATCH_SIZE
#: Number of images and generator seed of each split (the seeds differ, so the splits are disjoint).
SPLITS = {"train": (7200, 101), "test": (600, 202)}  # test: a full-split token-slider evaluation in <= 250 ms (issue 8)


def _sdf(label: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (approximate, in object radii; < 0 inside) of class ``label`` at (u, v)."""
    rho = np.hypot(u, v)
    if label == 0:  # circle
        return rho - 0.85
    if label == 1:  # square
        return np.maximum(np.abs(u), np.abs(v)) - 0.72
    if label == 2:  # equilateral triangle, circumradius 1
        angles = np.pi / 2 + 2 * np.pi * np.arange(3) / 3
        edges = [u * np.cos(a) + v * np.sin(a) for a in angles]
        return np.maximum.reduce(edges) - 0.5
    if label == 3:  # plus-shaped cross
        au, av = np.abs(u), np.abs(v)
        return np.minimum(np.maximum(au - 1.0, av - 0.3), np.maximum(au - 0.3, av - 1.0))
    if label == 4:  # ring
        return np.abs(rho - 0.72) - 0.24
    if label == 5:  # bar (elongated rectangle)
        return np.maximum(np.abs(u) - 1.0, np.abs(v) - 0.26)
    raise ValueError(f"label must be in 0..{len(CLASS_NAMES) - 1}, got {label}")


def _clutter(rng: np.random.Generator, n: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Low-contrast background clutter, (n, 3, S, S) float32: soft colour blobs and faint lines."""
    out = np.zeros((n, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    coords = yy[:, 0]  # (S,) pixel centres
    for _ in range(4):  # Gaussian blobs, separable: (n, S, 1) * (n, 1, S)
        cy, cx = rng.uniform(0, IMAGE_SIZE, (2, n, 1)).astype(np.float32)
        sigma = rng.uniform(2.0, 6.0, (n, 1)).astype(np.float32)
        gy = np.exp(-((coords - cy) ** 2) / (2 * sigma**2))  # (n, S)
        gx = np.exp(-((coords - cx) ** 2) / (2 * sigma**2))
        amp = rng.uniform(-0.12, 0.12, (n, 3, 1, 1)).astype(np.float32)
        out += amp * (gy[:, :, None] * gx[:, None, :])[:, None]
    for _ in range(2):  # lines through the whole image, about one pixel wide
        theta = rng.uniform(0, np.pi, (n, 1, 1)).astype(np.float32)
        offset = rng.uniform(-12, 12, (n, 1, 1)).astype(np.float32)
        half = IMAGE_SIZE / 2
        dist = np.abs((xx - half) * np.sin(theta) - (yy - half) * np.cos(theta) - offset)
        amp = rng.uniform(-0.1, 0.1, (n, 3, 1, 1)).astype(np.float32)
        out += amp * np.clip(1.0 - dist, 0.0, 1.0)[:, None]
    return out


def generate_shapes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (n, 3, 32, 32) float32 in [0, 1] and labels (n,) int64, balanced, from ``seed``.

    Deterministic: the same (n, seed) gives identical arrays on every machine (numpy's PCG64).
    """
    if n < 1:
        raise ValueError(f"n must be a positive number of images, got {n}")
    rng = np.random.default_rng(seed)
    k = len(CLASS_NAMES)
    labels = rng.permutation(np.arange(n) % k).astype(np.int64)  # balanced to within one
    f32 = np.float32
    yy, xx = (np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] + 0.5).astype(f32)  # pixel centres, (S, S)

    radius = rng.uniform(6.0, 11.0, n)  # object radius in pixels
    cy = rng.uniform(radius + 0.5, IMAGE_SIZE - radius - 0.5)
    cx = rng.uniform(radius + 0.5, IMAGE_SIZE - radius - 0.5)
    angle = rng.uniform(0, 2 * np.pi, n)
    c, s = (np.cos(angle)[:, None, None].astype(f32), np.sin(angle)[:, None, None].astype(f32))
    dy, dx = yy - cy[:, None, None].astype(f32), xx - cx[:, None, None].astype(f32)  # (n, S, S)
    r = radius[:, None, None].astype(f32)
    u, v = (c * dx + s * dy) / r, (-s * dx + c * dy) / r  # rotated, in object radii

    coverage = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), f32)
    for label in range(k):
        idx = labels == label
        sdf = _sdf(label, u[idx], v[idx]) * r[idx]  # in pixels
        coverage[idx] = np.clip(0.5 - sdf, 0.0, 1.0)  # anti-aliased edge

    background = rng.uniform(0.15, 0.85, (n, 3)).astype(f32)
    # object colour: random, but pushed away from the background where the two are close
    colour = rng.uniform(0.0, 1.0, (n, 3)).astype(f32)
    too_close = np.abs(colour - background).sum(1) < 0.6
    colour[too_close] = np.where(background > 0.5, background - 0.5, background + 0.5)[too_close]
    noise = rng.standard_normal((n, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=f32) * f32(0.03)

    img = background[:, :, None, None] + _clutter(rng, n, yy, xx)  # (n, 3, S, S)
    cov = coverage[:, None]
    img = img * (1 - cov) + colour[:, :, None, None] * cov + noise
    return np.clip(img, 0.0, 1.0, out=img), labels


@lru_cache(maxsize=2)
def _shapes_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    n, seed = SPLITS[split]
    return generate_shapes(n, seed)


def shapes_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed ``split`` ('train' or 'test'): images (S, 3, 32, 32) float32 and labels (S,) int64."""
    x, y = _shapes_split(split)
    return torch.from_numpy(x.copy()), torch.from_numpy(y.copy())


def patch_grid(patch_size: int = PATCH_SIZE) -> tuple[int, int]:
    """(rows, columns) of the patch-token grid for ``patch_size`` (row-major token order after CLS)."""
    if patch_size < 1 or IMAGE_SIZE % patch_size:
        raise ValueError(f"patch_size must divide {IMAGE_SIZE}, got {patch_size}")
    return IMAGE_SIZE // patch_size, IMAGE_SIZE // patch_size


def vit_prunable_weights(depth: int) -> tuple[str, ...]:
    """A ``depth``-block ViT's prunable weights: patch embedding, qkv, proj, fc1, fc2 of every block, head."""
    names = ["patch_embed.proj.weight"]
    for i in range(depth):
        names += [f"blocks.{i}.attn.qkv.weight", f"blocks.{i}.attn.proj.weight",
                  f"blocks.{i}.mlp.fc1.weight", f"blocks.{i}.mlp.fc2.weight"]
    return tuple(names + ["head.weight"])


#: Architecture of the sample ViT (see :class:`~prunescope.sample_models.vit.VisionTransformer`).
VIT_CONFIG = {"img_size": IMAGE_SIZE, "patch_size": PATCH_SIZE, "num_classes": len(CLASS_NAMES),
              "embed_dim": 64, "depth": 4, "num_heads": 4, "mlp_ratio": 2.0}


def _build_vit() -> VisionTransformer:
    return seeded_build(VisionTransformer, **VIT_CONFIG)


@register_sample_model
def shapes_vit() -> SampleModel:
    return SampleModel(
        name="shapes_vit",
        description="ViT (4 blocks, 4 heads, dim 64, 8x8 patch tokens + CLS) on procedural 32x32 shapes",
        build=_build_vit,
        load_split=shapes_split,
        prunable_weights=vit_prunable_weights(VIT_CONFIG["depth"]),
        train_config={"epochs": 24, "lr": 2e-3, "batch_size": 64, "optimizer": "adamw",
                      "weight_decay": 0.05, "warmup_fraction": 0.05, "schedule": "cosine",
                      "augment": "dihedral"},
        image_shape=(3, IMAGE_SIZE, IMAGE_SIZE),
        class_names=CLASS_NAMES,
    )
