"""CIFAR-style ResNet-18, as used by most continual-learning papers and by mammoth.

Differences from the ImageNet ResNet-18: the stem is a single 3x3 convolution with stride 1 and
there is no max-pool, so a 32x32 input keeps its resolution through the first stage
(32 -> 32 -> 16 -> 8 -> 4). With ``num_filters=64`` and 10 classes it has 11,173,962 parameters.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from backbone.base import Backbone
from utils.options import option


@dataclass
class ResNet18Options:
    num_filters: int = option(64, "base width of the ResNet-18 (stages use 1x, 2x, 4x, 8x this many "
                                  "filters; features have 8x)", min=1)


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv/BN layers with an identity (or 1x1 conv/BN projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(Backbone):
    Options = ResNet18Options

    def __init__(self, num_classes: int, options: ResNet18Options | None = None,
                 in_channels: int = 3):
        super().__init__()
        self.options = options if options is not None else ResNet18Options()
        nf = self.options.num_filters
        self.num_classes = num_classes
        self.feature_dim = 8 * nf

        self.conv1 = _conv3x3(in_channels, nf, stride=1)
        self.bn1 = nn.BatchNorm2d(nf)
        widths = (nf, 2 * nf, 4 * nf, 8 * nf)
        strides = (1, 2, 2, 2)
        stages = []
        prev = nf
        for width, stride in zip(widths, strides):
            stages.append(nn.Sequential(BasicBlock(prev, width, stride), BasicBlock(width, width, 1)))
            prev = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return torch.flatten(self.pool(out), 1)
