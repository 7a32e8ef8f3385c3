"""Random access to the images of a split that is too large to keep decoded in memory."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image


class ImageSource:
    """A split's images, read one at a time as RGB PIL images (in DataLoader workers)."""

    def __len__(self) -> int:
        raise NotImplementedError

    def image(self, i: int) -> Image.Image:
        raise NotImplementedError


class FileImages(ImageSource):
    def __init__(self, paths: Sequence[str | Path]):
        self.paths = [str(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int) -> Image.Image:
        with Image.open(self.paths[i]) as img:
            return img.convert("RGB")


class ArrayImages(ImageSource):
    """Images held as a uint8 array (N, H, W) or (N, H, W, C), e.g. one dataset of a sequence."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def image(self, i: int) -> Image.Image:
        return Image.fromarray(np.asarray(self.array[i])).convert("RGB")


class ConcatImages(ImageSource):
    """Several sources one after the other (a sequence of datasets)."""

    def __init__(self, parts: Sequence[ImageSource]):
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def image(self, i: int) -> Image.Image:
        part = int(np.searchsorted(self.starts, i, side="right") - 1)
        return self.parts[part].image(i - int(self.starts[part]))


class TensorImages(ImageSource):
    """A uint8 image tensor (N, C, H, W) seen as an image source (to join file-backed ones)."""

    def __init__(self, images):
        self.images = images

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def image(self, i: int) -> Image.Image:
        array = self.images[i].permute(1, 2, 0).numpy()
        return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).convert("RGB")


class SubsetImages(ImageSource):
    """The images of ``source`` at ``indices``, in that order (e.g. a few-shot subset)."""

    def __init__(self, source: ImageSource, indices: Sequence[int]):
        self.source, self.indices = source, [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def image(self, i: int) -> Image.Image:
        return self.source.image(self.indices[i])
