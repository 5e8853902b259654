"""Sample models on scikit-learn's bundled 8x8 handwritten digits (no download needed)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import nn

from prunescope.sample_models._registry import SampleModel, register_sample_model

#: Seed of the fixed train/test split and of every model's initialisation.
SPLIT_SEED = 0
TEST_FRACTION = 0.3


@lru_cache(maxsize=1)
def _digits_split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)  # (1797, 64) in [0, 1]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    n_test = int(round(TEST_FRACTION * len(y)))
    test, train = order[:n_test], order[n_test:]
    return {"train": (x[train], y[train]), "test": (x[test], y[test])}


def digits_split(split: str, image: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits ``split`` as tensors: inputs (S, 64), or (S, 1, 8, 8) when ``image``; labels (S,)."""
    x, y = _digits_split()[split]
    inputs = torch.from_numpy(x.copy())
    if image:
        inputs = inputs.reshape(-1, 1, 8, 8)
    return inputs, torch.from_numpy(y.copy())


class DigitsMLP(nn.Module):
    """LeNet-300-100 analogue for 8x8 digits: 64 -> 300 -> 100 -> 10."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (B, 64)
        x = torch.relu(self.fc1(x))  # (B, 300)
        x = torch.relu(self.fc2(x))  # (B, 100)
        return self.fc3(x)  # (B, 10)


class DigitsCNN(nn.Module):
    """Two 3x3 conv layers, a 2x2 max-pool and a two-layer head for 8x8 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))  # (B, 16, 8, 8)
        x = torch.relu(self.conv2(x))  # (B, 32, 8, 8)
        x = torch.max_pool2d(x, 2).flatten(1)  # (B, 512)
        x = torch.relu(self.fc1(x))  # (B, 64)
        return self.fc2(x)  # (B, 10)


#: Label names of the digits classes.
DIGIT_NAMES = tuple(str(d) for d in range(10))


def seeded_build(cls: type[nn.Module], seed: int = SPLIT_SEED, **kwargs) -> nn.Module:
    """``cls(**kwargs)`` initialised from ``seed``; the global torch RNG state is restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(**kwargs)


@register_sample_model
def digits_mlp() -> SampleModel:
    return SampleModel(
        name="digits_mlp",
        description="MLP 64-300-100-10 (LeNet-300-100 analogue) on scikit-learn's 8x8 digits",
        build=lambda: seeded_build(DigitsMLP),
        load_split=lambda split: digits_split(split, image=False),
        prunable_weights=("fc1.weight", "fc2.weight", "fc3.weight"),
        train_config={"epochs": 60, "lr": 1e-3, "batch_size": 64},
        image_shape=(1, 8, 8),
        class_names=DIGIT_NAMES,
    )


@register_sample_model
def digits_cnn() -> SampleModel:
    return SampleModel(
        name="digits_cnn",
        description="CNN conv16-conv32-pool-fc64-fc10 on scikit-learn's 8x8 digits",
        build=lambda: seeded_build(DigitsCNN),
        load_split=lambda split: digits_split(split, image=True),
        prunable_weights=("conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"),
        train_config={"epochs": 40, "lr": 2e-3, "batch_size": 64},
        image_shape=(1, 8, 8),
        class_names=DIGIT_NAMES,
    )
