"""Evaluation data in, as tensors."""

from __future__ import annotations

from typing import Any, Iterable

import torch


def as_tensors(data: Any, what: str = "data") -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, labels)`` tensors from a pair of tensors/arrays or an iterable of batches.

    Labels may be class indices (1-D integers) or targets of any shape for a custom task.
    """
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], (tuple, list)):
        inputs, labels = data
    elif isinstance(data, Iterable) and not isinstance(data, (str, bytes, torch.Tensor)):
        batches = list(data)
        if not batches or any(len(b) != 2 for b in batches):
            raise ValueError(f"{what} must be (inputs, labels) or an iterable of (inputs, labels) batches")
        inputs = torch.cat([torch.as_tensor(b[0]) for b in batches])
        labels = torch.cat([torch.as_tensor(b[1]) for b in batches])
    else:
        raise ValueError(f"{what} must be (inputs, labels) or a DataLoader, got {type(data).__name__}")
    try:
        inputs, labels = torch.as_tensor(inputs), torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{what} must hold numbers: {err}") from None
    if len(inputs) != len(labels) or len(labels) == 0:
        raise ValueError(f"{what}: inputs and labels must have the same non-zero length, got {len(inputs)} and {len(labels)}")
    return inputs, labels
