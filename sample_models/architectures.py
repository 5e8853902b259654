"""Building blocks of the architectures people bring, for tests and benchmarks (no weights).

The engine is tried on residual CNNs as well as the sample models; the tests and the latency
benchmark build theirs from this one block, so a channel-coupling test and a speed table speak
of the same residual structure.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """ResNet's basic block (He et al., 2016): conv3x3-BN-ReLU-conv3x3-BN plus the input, then
    ReLU. Where the shape changes (``stride != 1`` or ``cin != cout``) the input passes a strided
    1x1 conv + BN ``shortcut`` (option B of the paper); else the identity."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, cin, H, W) -> (B, cout, H/stride, W/stride)
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + (x if self.shortcut is None else self.shortcut(x)))
