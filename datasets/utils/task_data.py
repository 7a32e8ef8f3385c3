"""The data of one or more tasks, as batches of dicts the task loop hands to ``observe``.

Every batch is a dict with:
- ``inputs``: the augmented, normalised images the network sees;
- ``not_aug_inputs``: the same images without augmentation or normalisation (float in [0, 1]),
  what rehearsal methods store and re-augment with ``model.transform``;
- ``labels``: int64 labels in the run's class order;
- ``indexes``: int64 positions of the items in the dataset split, so a memory can store indices.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import Tensor, nn

Batch = dict[str, Tensor]


class TensorTaskData:
    """Task data held as uint8 image tensors: batches are slices, augmentation is batched.

    Used by the in-memory synthetic world and any dataset small enough to keep decoded in memory:
    no DataLoader, no per-sample Python work, and the images can live on the GPU.
    """

    def __init__(self, images: Tensor, labels: Tensor, indexes: Tensor,
                 augment: nn.Module | None, normalize: Callable[[Tensor], Tensor]):
        self.images, self.labels, self.indexes = images, labels, indexes
        self.augment, self.normalize = augment, normalize

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device) -> "TensorTaskData":
        self.images, self.labels, self.indexes = (t.to(device) for t in (self.images, self.labels, self.indexes))
        return self

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        n = len(self)
        return n // batch_size if drop_last else -(-n // batch_size)

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                train: bool = False) -> Iterator[Batch]:
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else None
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size] if order is not None else slice(start, start + batch_size)
            if order is not None:
                idx = idx.to(self.images.device)
            yield self.make_batch(self.images[idx], self.labels[idx], self.indexes[idx], train, generator)

    def make_batch(self, images: Tensor, labels: Tensor, indexes: Tensor, train: bool,
                   generator: torch.Generator | None = None) -> Batch:
        raw = images.float().div_(255)
        x = self.augment(raw, generator) if (train and self.augment is not None) else raw
        return {"inputs": self.normalize(x), "not_aug_inputs": raw, "labels": labels, "indexes": indexes}


def concat_task_data(parts: list[TensorTaskData]) -> TensorTaskData:
    """One ``TensorTaskData`` over several tasks (joint training, evaluation over many tasks)."""
    first = parts[0]
    if len(parts) == 1:
        return first
    return TensorTaskData(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]),
                          torch.cat([p.indexes for p in parts]), first.augment, first.normalize)
