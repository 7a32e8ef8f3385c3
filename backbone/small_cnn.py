"""A small, fast CNN for quick tests and the offline default benchmark on 32x32 images.

Four conv(3x3)/BatchNorm/ReLU blocks with ``w, 2w, 4w, 8w`` channels (``w = cnn_width``), a 2x2
max-pool after each of the first three (32 -> 16 -> 8 -> 4), global average pooling and a linear
classifier; features have ``8 * cnn_width`` dimensions. With the default ``cnn_width=16`` it has
about 99k parameters and trains at several thousand 32x32 images/s on two CPU cores.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from backbone.base import Backbone
from utils.options import option


@dataclass
class SmallCNNOptions:
    cnn_width: int = option(16, "channels of the first small-cnn block (blocks use 1x, 2x, 4x, 8x "
                                "this many; features have 8x)", min=1)


def _block(in_channels: int, out_channels: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SmallCNN(Backbone):
    Options = SmallCNNOptions

    def __init__(self, num_classes: int, options: SmallCNNOptions | None = None,
                 in_channels: int = 3):
        super().__init__()
        self.options = options if options is not None else SmallCNNOptions()
        w = self.options.cnn_width
        self.num_classes = num_classes
        self.feature_dim = 8 * w
        self.body = nn.Sequential(
            _block(in_channels, w, pool=True),
            _block(w, 2 * w, pool=True),
            _block(2 * w, 4 * w, pool=True),
            _block(4 * w, 8 * w, pool=False),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.body(x)), 1)
