"""The procedural shapes dataset: deterministic, balanced, varied, disjoint splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prunescope.sample_models.shapes import CLASS_NAMES, SPLITS, generate_shapes, patch_grid, shapes_split


def test_same_seed_gives_identical_arrays_and_another_seed_does_not():
    x1, y1 = generate_shapes(140, seed=5)
    x2, y2 = generate_shapes(140, seed=5)
    x3, _ = generate_shapes(140, seed=6)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(x1, x3)


def test_images_are_rgb_float32_in_the_unit_range():
    x, y = generate_shapes(70, seed=0)
    assert x.shape == (70, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int64
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert x.std(axis=(1, 2, 3)).min() > 0.02  # no blank images


@pytest.mark.parametrize("split", ["train", "test"])
def test_splits_have_their_size_and_balanced_classes(split):
    x, y = shapes_split(split)
    assert len(x) == len(y) == SPLITS[split][0]
    counts = torch.bincount(y, minlength=len(CLASS_NAMES))
    assert len(counts) == len(CLASS_NAMES) >= 6
    assert counts.max() - counts.min() <= 1


def test_splits_are_cached_copies_and_disjoint():
    x, _ = shapes_split("test")
    x[0] = 0.0  # the caller owns what it gets; the cache is not touched
    assert shapes_split("test")[0][0].abs().sum() > 0
    train, test = shapes_split("train")[0].numpy(), shapes_split("test")[0].numpy()
    train_keys = {row.tobytes() for row in train[:, 0, ::4, ::4]}
    assert not any(row.tobytes() in train_keys for row in test[:, 0, ::4, ::4])


def test_objects_appear_at_varying_positions():
    x, _ = generate_shapes(700, seed=3)
    # object pixels: far (L1 over channels) from the image's median colour; clutter is low-contrast
    median = np.median(x.reshape(len(x), 3, -1), axis=2)[:, :, None, None]
    obj = np.abs(x - median).sum(1) > 0.45  # (n, 32, 32)
    assert (obj.sum((1, 2)) >= 8).mean() > 0.95  # nearly every image has a visible object
    rows, cols = np.mgrid[0:32, 0:32]
    area = np.maximum(obj.sum((1, 2)), 1)
    cy, cx = (obj * rows).sum((1, 2)) / area, (obj * cols).sum((1, 2)) / area
    assert cy.std() > 3.0 and cx.std() > 3.0  # positions spread over the image
    quadrants = np.bincount((cy > 16).astype(int) * 2 + (cx > 16), minlength=4)
    assert quadrants.min() > 0.1 * len(x)  # every quadrant gets objects


def test_patch_grid_and_its_errors():
    assert patch_grid() == (8, 8) and patch_grid(8) == (4, 4)
    with pytest.raises(ValueError, match="patch_size must divide 32, got 5"):
        patch_grid(5)
    with pytest.raises(ValueError, match="n must be a positive number of images, got 0"):
        generate_shapes(0, seed=0)
    with pytest.raises(ValueError, match="split must be one of"):
        shapes_split("val")
