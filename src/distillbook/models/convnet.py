"""The small ConvNet of the dataset-distillation literature (MTT, AST), on flat inputs.

Depth blocks of conv 3x3 (``width`` channels) -> norm -> ReLU -> 2x2 average pooling, then a linear
classifier. ``norm`` is ``instance`` (GroupNorm with one group per channel, affine, as in the reference
code's instancenorm), ``batch`` (for the BatchNorm teachers that statistics matching needs) or ``none``.
Inputs arrive flattened, (n, C * H * W), like every other model of the book, and are reshaped here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

NORMS = ("instance", "batch", "none")


class ConvNet(nn.Module):
    def __init__(self, image_shape: Sequence[int], n_classes: int, width: int = 128, depth: int = 3,
                 norm: str = "instance"):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm={norm!r}; allowed: {', '.join(NORMS)}")
        channels, height, width_px = image_shape
        if min(height, width_px) < 2 ** depth:
            raise ValueError(f"depth={depth} halves a {height}x{width_px} image below one pixel")
        self.image_shape = tuple(image_shape)
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers.append(nn.Conv2d(channels, width, 3, padding=1))
            if norm == "instance":
                layers.append(nn.GroupNorm(width, width, affine=True))
            elif norm == "batch":
                layers.append(nn.BatchNorm2d(width))
            layers += [nn.ReLU(), nn.AvgPool2d(2)]
            channels, height, width_px = width, height // 2, width_px // 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels * height * width_px, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x.reshape(len(x), *self.image_shape))
        return self.classifier(h.flatten(1))
