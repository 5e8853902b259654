"""Corruptions: deterministic per seed, monotone in severity, shapes and range kept, blur = scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from prunescope.explorer.geometry import CORRUPTIONS, corrupt
from prunescope.explorer.geometry.corruptions import _BLUR_SIGMA, _CONTRAST, _NOISE_STD


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_shapes_dtype_range_and_flat_inputs(kind, digits, images):
    x, _ = digits
    flat = corrupt(x[:20], kind, 3, seed=1, image_shape=(1, 8, 8))
    assert flat.shape == x[:20].shape and flat.dtype == x.dtype
    assert torch.equal(flat, corrupt(x[:20].reshape(-1, 1, 8, 8), kind, 3, seed=1).reshape(20, 64))
    out = corrupt(images, kind, 5, seed=1)
    assert out.shape == images.shape and out.min() >= 0.0 and out.max() <= 1.0
    assert not torch.equal(out, images)
    shifted = corrupt(images * 2 - 1, kind, 5, seed=1, value_range=(-1.0, 1.0))
    assert shifted.min() >= -1.0 and shifted.max() <= 1.0


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_deterministic_per_seed_and_no_global_rng(kind, images):
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    a = corrupt(images, kind, 4, seed=7)
    assert torch.equal(a, corrupt(images, kind, 4, seed=7))
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    if kind in ("gaussian_noise", "occlusion"):  # the random kinds depend on the seed
        assert not torch.equal(a, corrupt(images, kind, 4, seed=8))


@pytest.mark.parametrize("kind", ["gaussian_noise", "contrast", "occlusion"])
def test_severity_monotone_per_pixel(kind, images, digits):
    for batch in (images, digits[0][:50].reshape(-1, 1, 8, 8)):
        moves = [(corrupt(batch, kind, s, seed=3) - batch).abs() for s in range(1, 6)]
        for weaker, stronger in zip(moves, moves[1:]):
            assert (stronger >= weaker - 1e-6).all()
        assert moves[-1].sum() > moves[0].sum()


def test_blur_matches_scipy_and_grows_with_severity(images, digits):
    x = digits[0][:30].reshape(-1, 1, 8, 8)
    for s in range(1, 6):
        sigma = _BLUR_SIGMA[s - 1]  # images of side <= 16 use the base sigmas
        radius = min(int(np.ceil(3 * sigma)), 7)
        expected = gaussian_filter(x.numpy().astype(np.float64), sigma=(0, 0, sigma, sigma),
                                   mode="mirror", truncate=radius / sigma)
        np.testing.assert_allclose(corrupt(x, "blur", s).numpy(), expected, atol=1e-5)
    distance = [(corrupt(images, "blur", s) - images).abs().mean() for s in range(1, 6)]
    assert all(b > a for a, b in zip(distance, distance[1:]))


def test_contrast_and_noise_strength():
    flat = torch.full((4, 1, 32, 32), 0.5)
    noisy = corrupt(flat, "gaussian_noise", 1, seed=0) - 0.5
    assert noisy.std().item() == pytest.approx(_NOISE_STD[0], rel=0.05)
    ramp = torch.linspace(0, 1, 64).reshape(1, 1, 8, 8)
    mean = ramp.mean()
    for s in range(1, 6):
        expected = (ramp - mean) * _CONTRAST[s - 1] + mean
        assert torch.allclose(corrupt(ramp, "contrast", s), expected, atol=1e-6)


def test_occlusion_fills_one_square():
    ones = torch.ones(50, 1, 10, 10)
    for s, side in zip(range(1, 6), (2, 3, 4, 6, 7)):  # ceil of 0.2, 0.3, 0.4, 0.55, 0.7 of 10
        holes = corrupt(ones, "occlusion", s, seed=5)[:, 0] == 0
        for hole in holes:
            rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
            assert hole.sum() == len(rows) * len(cols)  # a full rectangle
            assert len(rows) == side and len(cols) == side  # fully inside the image


def test_bad_input(images):
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        corrupt(images, "fog", 1)
    for severity in (0, 6, 2.5):
        with pytest.raises(ValueError, match="severity must be an integer in 1..5"):
            corrupt(images, "blur", severity)
    with pytest.raises(ValueError, match="image_shape"):
        corrupt(torch.rand(4, 64), "blur", 1)
    with pytest.raises(ValueError, match="C\\*H\\*W = 64"):
        corrupt(torch.rand(4, 64), "blur", 1, image_shape=(1, 7, 7))
