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
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

Batch = dict[str, Tensor]


class TensorTaskData:
    """Task data held as uint8 image tensors: batches are slices, augmentation is batched.

    Used by the in-memory synthetic world and any dataset small enough to keep decoded in memory:
    no DataLoader, no per-sample Python work, and the images can live on the GPU.
    """

    def __init__(self, images: Tensor, labels: Tensor, indexes: Tensor,
                 augment: Callable | None, normalize: Callable[[Tensor], Tensor]):
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

    @classmethod
    def concat(cls, parts: list["TensorTaskData"]) -> "TensorTaskData":
        first = parts[0]
        return cls(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]),
                   torch.cat([p.indexes for p in parts]), first.augment, first.normalize)


class FeatureTaskData(TensorTaskData):
    """Task data of cached features from a frozen encoder: ``images`` holds (N, 1 + K, D) features,
    view 0 from the test transform and views 1..K from augmented images. Training batches draw one
    augmented view per item (the clean one when K = 0); ``not_aug_inputs`` is always view 0."""

    def __init__(self, features: Tensor, labels: Tensor, indexes: Tensor, augment=None, normalize=None):
        super().__init__(features, labels, indexes, None, lambda x: x)

    def make_batch(self, images: Tensor, labels: Tensor, indexes: Tensor, train: bool,
                   generator: torch.Generator | None = None) -> Batch:
        clean = images[:, 0].float()
        n_aug = images.shape[1] - 1
        if train and n_aug > 0:
            view = 1 + (torch.rand(images.shape[0], generator=generator) * n_aug).long().clamp_(max=n_aug - 1)
            inputs = images[torch.arange(images.shape[0], device=images.device), view.to(images.device)].float()
        else:
            inputs = clean
        return {"inputs": inputs, "not_aug_inputs": clean, "labels": labels, "indexes": indexes}


class _SourceItems(Dataset):
    """Items of an image source by split position: (augmented, not augmented) images for training."""

    def __init__(self, source, positions: Tensor, train_tf: Callable | None, test_tf: Callable):
        self.source, self.positions = source, positions.tolist()
        self.train_tf, self.test_tf = train_tf, test_tf

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int):
        img = self.source.image(self.positions[i])
        plain = self.test_tf(img)
        return (self.train_tf(img) if self.train_tf is not None else plain), plain


class LoaderTaskData:
    """Task data read from files through DataLoader workers (PIL transforms give [0, 1] tensors;
    normalisation is batched). Same batches as ``TensorTaskData``; the shuffling order and the
    workers' augmentation seeds come from the loop's generator, so runs are reproducible."""

    def __init__(self, source, labels: Tensor, indexes: Tensor, train_tf: Callable | None, test_tf: Callable,
                 normalize: Callable[[Tensor], Tensor], num_workers: int = 2):
        self.source, self.labels, self.indexes = source, labels, indexes
        self.train_tf, self.test_tf, self.normalize, self.num_workers = train_tf, test_tf, normalize, num_workers

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device) -> "LoaderTaskData":
        return self                                  # batches are moved by the loop

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                train: bool = False) -> Iterator[Batch]:
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator)) if generator is not None else 0
        items = _SourceItems(self.source, self.indexes[order], self.train_tf if train else None, self.test_tf)
        loader = DataLoader(items, batch_size=batch_size, shuffle=False, num_workers=self.num_workers,
                            generator=torch.Generator().manual_seed(seed), pin_memory=torch.cuda.is_available())
        for start, (aug, plain) in zip(range(0, len(self), batch_size), loader):
            pos = order[start:start + batch_size]
            yield {"inputs": self.normalize(aug), "not_aug_inputs": plain, "labels": self.labels[pos],
                   "indexes": self.indexes[pos]}

    @classmethod
    def concat(cls, parts: list["LoaderTaskData"]) -> "LoaderTaskData":
        first = parts[0]
        return cls(first.source, torch.cat([p.labels for p in parts]), torch.cat([p.indexes for p in parts]),
                   first.train_tf, first.test_tf, first.normalize, first.num_workers)


def concat_task_data(parts: list[TensorTaskData]) -> TensorTaskData:
    """One ``TensorTaskData`` over several tasks (joint training, evaluation over many tasks)."""
    return parts[0] if len(parts) == 1 else type(parts[0]).concat(parts)
