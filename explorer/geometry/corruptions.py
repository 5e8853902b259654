"""Deterministic input corruptions at severities 1-5, after ImageNet-C (Hendrycks & Dietterich 2019).

Works on image batches ``(B, C, H, W)`` and on flat batches ``(B, C*H*W)`` given ``image_shape``;
the result has the input's shape and dtype and lies in ``value_range``. Randomness comes from a
``torch.Generator`` seeded with ``seed`` (no global RNG is touched). For a fixed seed each kind
is monotone in severity: the noise, contrast and occlusion of severity ``s + 1`` move every pixel
at least as far from the clean value as severity ``s`` (occlusion squares are nested); blur
widens its Gaussian.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

#: Corruption kinds, in display order.
CORRUPTIONS = ("gaussian_noise", "blur", "contrast", "occlusion")
SEVERITIES = (1, 2, 3, 4, 5)

#: Per-severity strength: noise std (fraction of the value range), blur sigma (pixels of an
#: image of side 16 or less, scaled with the side beyond), contrast factor, occluded side fraction.
_NOISE_STD = (0.08, 0.12, 0.18, 0.26, 0.38)
_BLUR_SIGMA = (0.4, 0.6, 0.8, 1.0, 1.3)
_CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)
_OCCLUSION = (0.2, 0.3, 0.4, 0.55, 0.7)


def _as_images(inputs: torch.Tensor, image_shape: Sequence[int] | None) -> torch.Tensor:
    if image_shape is not None:
        shape = tuple(int(s) for s in image_shape)
        if len(shape) != 3 or math.prod(shape) != inputs[0].numel():
            raise ValueError(
                f"image_shape must be (C, H, W) with C*H*W = {inputs[0].numel()} values per sample, got {shape}"
            )
        return inputs.reshape(len(inputs), *shape)
    if inputs.ndim != 4:
        raise ValueError(
            f"inputs must be images (B, C, H, W), got shape {tuple(inputs.shape)}; pass image_shape=(C, H, W) "
            "for flat inputs"
        )
    return inputs


def _gaussian_kernel(sigma: float, size: int) -> torch.Tensor:
    radius = max(1, min(math.ceil(3 * sigma), size - 1))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflected borders, per channel."""
    c, h, w = images.shape[1:]
    out = images
    for axis, size in ((2, h), (3, w)):
        if size < 2:
            continue
        kernel = _gaussian_kernel(sigma, size).to(images)
        r = (len(kernel) - 1) // 2
        weight = kernel.view(1, 1, -1, 1) if axis == 2 else kernel.view(1, 1, 1, -1)
        pad = (0, 0, r, r) if axis == 2 else (r, r, 0, 0)
        out = F.conv2d(F.pad(out, pad, mode="reflect"), weight.expand(c, 1, *weight.shape[2:]), groups=c)
    return out


def _occlude(images: torch.Tensor, level: int, generator: torch.Generator, fill: float) -> torch.Tensor:
    """Fill a square of side ``_OCCLUSION[level]`` of the image around a seeded random centre per
    image. Centres are drawn where the largest square fits, so every square lies fully inside and
    the squares of one seed are nested across severities."""
    b, _, h, w = images.shape

    def side(fraction: float, size: int) -> int:
        return max(1, math.ceil(fraction * size - 1e-9))

    largest_h, largest_w = side(_OCCLUSION[-1], h), side(_OCCLUSION[-1], w)
    side_h, side_w = side(_OCCLUSION[level], h), side(_OCCLUSION[level], w)
    u = torch.rand(b, 2, generator=generator)  # the same centres for every severity
    centre_h = largest_h / 2 + u[:, 0] * (h - largest_h)
    centre_w = largest_w / 2 + u[:, 1] * (w - largest_w)
    # floor(x + 1/2) rounds monotonically and commutes with integer shifts: squares stay nested
    top = torch.floor(centre_h - side_h / 2 + 0.5).long()
    left = torch.floor(centre_w - side_w / 2 + 0.5).long()
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    inside = ((rows >= top.view(b, 1, 1)) & (rows < (top + side_h).view(b, 1, 1))
              & (cols >= left.view(b, 1, 1)) & (cols < (left + side_w).view(b, 1, 1)))
    return images.masked_fill(inside.unsqueeze(1), fill)


def corrupt(
    inputs: torch.Tensor,
    kind: str,
    severity: int,
    seed: int = 0,
    image_shape: Sequence[int] | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """A corrupted copy of ``inputs``: ``kind`` in :data:`CORRUPTIONS` at ``severity`` 1-5.

    ``image_shape`` = ``(C, H, W)`` reads flat inputs as images (digits: ``(1, 8, 8)``).
    ``value_range`` is the data range the result is clipped to; occlusion fills with its low end.
    """
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}; known: {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or int(severity) != severity or not 1 <= severity <= 5:
        raise ValueError(f"severity must be an integer in 1..5, got {severity!r}")
    low, high = float(value_range[0]), float(value_range[1])
    if not high > low:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
    level = int(severity) - 1
    images = _as_images(inputs, image_shape).float()
    generator = torch.Generator().manual_seed(int(seed))
    if kind == "gaussian_noise":
        noise = torch.randn(images.shape, generator=generator)
        out = images + _NOISE_STD[level] * (high - low) * noise
    elif kind == "blur":
        side = min(images.shape[2:])
        out = _blur(images, _BLUR_SIGMA[level] * max(1.0, side / 16))
    elif kind == "contrast":
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        out = (images - mean) * _CONTRAST[level] + mean
    else:
        out = _occlude(images, level, generator, low)
    return out.clamp(low, high).to(inputs.dtype).reshape(inputs.shape)
