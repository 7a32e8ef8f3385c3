"""Batched image augmentation on tensors, on whatever device the batch is on.

Replayed memory items and stream items go through the same code, and there is no per-sample
Python work: offsets and flips are drawn for the whole batch from one seeded generator.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class RandomCropFlip:
    """Zero-pad by ``padding``, crop back to the input size at a random offset, flip horizontally
    with probability 0.5: the standard CIFAR augmentation, for a whole batch at once."""

    def __init__(self, padding: int = 4, flip: bool = True):
        self.padding, self.flip = padding, flip

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        n, _, h, w = x.shape
        p = self.padding
        rand = torch.rand(n, 3, generator=generator).to(x.device)
        if p > 0:
            padded = F.pad(x, (p, p, p, p))
            dy = (rand[:, 0] * (2 * p + 1)).long().clamp_(max=2 * p)
            dx = (rand[:, 1] * (2 * p + 1)).long().clamp_(max=2 * p)
            rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])            # (n, h)
            cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])            # (n, w)
            if self.flip:
                flip = rand[:, 2] < 0.5
                cols = torch.where(flip[:, None], cols.flip(1), cols)
            batch = torch.arange(n, device=x.device)[:, None, None]
            out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
            return out.permute(0, 3, 1, 2).contiguous()
        if self.flip:
            flip = (rand[:, 2] < 0.5)[:, None, None, None]
            return torch.where(flip, x.flip(3), x)
        return x

    def __repr__(self) -> str:
        return f"RandomCropFlip(padding={self.padding}, flip={self.flip})"


class HorizontalFlipViews:
    """RandomHorizontalFlip(p=0.5) as cached feature views (CLAP4CLIP's only training augmentation): view ``v``
    (1-based) is the image itself for odd ``v`` and its mirror for even ``v``, so with ``--feature_views 2`` (or
    any even number) a training step, which draws one of the views uniformly, sees the mirror with probability
    exactly 1/2, independently at every step, as the original's per-item flip. Called directly it flips a
    random half of the batch (for images that are not cached)."""

    def for_view(self, view: int):
        return (lambda x, generator=None: x.flip(3)) if view % 2 == 0 else (lambda x, generator=None: x)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return RandomCropFlip(padding=0)(x, generator)

    def __repr__(self) -> str:
        return "HorizontalFlipViews()"


class Normalize:
    """Per-channel ``(x - mean) / std`` for a batch."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def __call__(self, x: Tensor) -> Tensor:
        if self.mean.device != x.device:
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        return (x - self.mean) / self.std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"
