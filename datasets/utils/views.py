"""Views of a dataset as a model with its own input pipeline sees it.

A view answers everything a ``ContinualDataset`` answers (it forwards what it does not override)
but serves other inputs: CLIP-preprocessed images, or cached features of a frozen image encoder.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from datasets.utils.task_data import FeatureTaskData, TensorTaskData
from utils import distributed
from utils.errors import UserError
from utils.feature_cache import FeatureCache, cache_key
from utils.precision import autocast


class DatasetView:
    """Forwards everything it does not override to the dataset. Task data is built by the dataset's
    own ``make_task_data`` run against the view, so it sees the view's ``split``, ``normalize`` and
    ``train_augmentation``."""

    TASK_DATA: type = TensorTaskData

    def __init__(self, dataset):
        self.dataset = dataset

    def __getattr__(self, name: str) -> Any:   # only called for attributes the view does not have
        return getattr(self.dataset, name)

    def task_data(self, tasks: int | Sequence[int], split: str) -> TensorTaskData:
        return self.make_task_data(tasks, split, self.TASK_DATA)

    def make_task_data(self, tasks: int | Sequence[int], split: str, kind: type) -> TensorTaskData:
        return type(self.dataset).make_task_data(self, tasks, split, kind)


class PreprocessedView(DatasetView):
    """Images through the model's deterministic preprocessing (e.g. CLIP's resize/crop/normalise)
    instead of the dataset's normalisation: what a model that encodes every batch itself (no feature
    cache) receives. The dataset's batched training augmentation is dropped (a frozen encoder then sees
    what its cached features would be made of) unless ``keep_augmentation`` (methods that train the
    encoder); file-backed datasets always augment with their own PIL training transform."""

    def __init__(self, dataset, preprocess, keep_augmentation: bool = False):
        super().__init__(dataset)
        self.normalize = preprocess
        self.keep_augmentation = keep_augmentation

    def train_augmentation(self):
        return self.dataset.train_augmentation() if self.keep_augmentation else None


class EncodedView(DatasetView):
    """Splits as features of a frozen image encoder, computed once per (encoder, weights, dataset,
    split, transform, precision, views) and cached on disk. The test set is encoded once per run."""

    TASK_DATA = FeatureTaskData

    def __init__(self, dataset, encoder, cache: FeatureCache, precision: str, device: torch.device,
                 batch_size: int = 256, views: int = 0, seed: int = 0, quiet: bool = True, augment=None):
        super().__init__(dataset)
        self.encoder, self.cache, self.precision, self.device = encoder, cache, precision, device
        self.batch_size, self.views, self.seed, self.quiet = batch_size, views, seed, quiet
        #: the augmentation the views are made with: the method's (``augment``), else the dataset's batched one
        self.view_augment = augment if augment is not None else dataset.train_augmentation()
        if views and self.view_augment is None:
            raise UserError(f"--feature_views {views}: {dataset.NAME} has no batched train augmentation to make "
                            f"augmented views with (file-backed datasets augment per image); use --feature_views 0")
        self._features: dict[str, torch.Tensor] = {}
        if views:
            self._check_views_fit()

    def _check_views_fit(self) -> None:
        """Refuse a --feature_views whose features would not fit in memory (or, cached, on disk) before encoding."""
        from utils.resources import check_disk, check_memory
        n = len(self.dataset.split_labels("train"))
        dim = int(getattr(self.encoder, "embed_dim", 0) or 1)
        nbytes = n * (1 + self.views) * dim * 4
        what = f"{1 + self.views} views of {n} training images ({dim} float32 each)"
        check_memory(nbytes, "--feature_views", what)
        if self.cache.root is not None:
            check_disk(nbytes, "--feature_views", what, self.cache.root)

    def normalize(self, x):
        return x

    def train_augmentation(self):
        return None

    def key(self, split: str) -> str:
        augment = self.view_augment if self.views and split == "train" else None
        return cache_key(encoder=self.encoder.name, weights=self.encoder.weights_id, dataset=self.dataset.describe(),
                         split=split, transform=self.encoder.describe_preprocess(), precision=self.precision,
                         views=self.views if split == "train" else 0, augment=repr(augment), seed=self.seed)

    def split(self, split: str):
        labels = self.dataset.split_labels(split)
        if split not in self._features:
            key = self.key(split)
            meta = {"encoder": self.encoder.name, "weights": self.encoder.weights_id, "split": split,
                    "dataset": self.dataset.describe(), "precision": self.precision}
            n_views = 1 + (self.views if split == "train" else 0)
            self._features[split] = self.cache.get_or_compute("image", key, lambda: self._encode(split), meta,
                                                              shape=(len(labels), n_views, None))
        return self._features[split].to(self.device), labels

    @torch.no_grad()
    def _encode(self, split: str) -> torch.Tensor:
        n_views = 1 + (self.views if split == "train" else 0)
        augment = self.view_augment
        out = []
        total = len(self.dataset.split(split)[0])          # a uint8 tensor or a file-backed ImageSource
        bar = tqdm(total=total * n_views, desc=f"encoding {self.dataset.NAME} {split}", leave=False,
                   disable=self.quiet, unit="img")
        mine = distributed.shard_range(-(-total // self.batch_size))    # DDP: this rank's batches; all of them alone
        for view in range(n_views):
            gen = torch.Generator().manual_seed(self.seed * 1000 + view)
            feats = []
            view_tf = augment.for_view(view) if view > 0 and hasattr(augment, "for_view") else augment
            for i, x in enumerate(self.dataset.image_batches(split, self.batch_size, size=self.encoder.image_size)):
                if view > 0:
                    x = view_tf(x, gen)        # every batch, so that each view draws what one process draws
                if i not in mine:
                    continue
                with autocast(self.precision, self.device):
                    f = self.encoder.encode_image(self.encoder.preprocess(x.to(self.device)))
                feats.append(f.float().cpu())
                bar.update(x.shape[0])
            if distributed.active():           # the ranks' blocks, in order: the whole split on every rank
                feats = [part for part in distributed.gather_objects(torch.cat(feats) if feats else None)
                         if part is not None]
            out.append(torch.cat(feats))
        bar.close()
        return torch.stack(out, dim=1)          # (N, views, D)

    def fetch(self, indexes: torch.Tensor, split: str = "train") -> torch.Tensor:
        features, _ = self.split(split)
        return features[indexes.to(features.device), 0].float()
