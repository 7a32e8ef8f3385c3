"""The MTIL framework's reference and distribution-shift datasets (WiSE-FT's suite), each one benchmark of one task:
``imagenet``, ``imagenet-a``, ``imagenet-r``, ``imagenet-sketch``, ``imagenet-v2``, ``objectnet``, ``ytbb-robust``,
``imagenet-vid-robust``, ``fmow``, ``iwildcam``. The raw data is read by one source each (``datasets/sources``).

They are evaluation sets above all (``--eval_datasets``: with ``--eval_only``, or as extra columns after every task
of a ZSCL-family run, never trained), scored by a zero-shot classifier over the set's own class names and templates
as ZSCL's framework does (``mtil/src/models/evaluation.py``); ``imagenet``, ``fmow`` and ``iwildcam`` have training
splits and can be trained on as a single task (``--dataset imagenet``). The framework's spellings are accepted by
``--eval_datasets`` (``ImageNetA``, ``ImageNetSketch``, ``YTBB``, ``ImageNetVidRobust``, ``FMOW``, ``IWildCam``).

A set may add metrics to top-1 and top-5 (``eval_metrics``: YTBB's and Vid-Robust's pm-0 / pm-10, FMoW's worst-region
accuracy, iWildCam's macro F1), computed from the predictions of its whole test set in split order, and may change
logits before they are scored (``project_logits``: YTBB's "none" class is never predicted, as in WiSE-FT).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import Tensor

from datasets.sources import RawDataset, get_source
from datasets.utils.continual_dataset import ContinualDataset

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ShiftDataset(ContinualDataset):
    """One source as one task over all its classes."""

    SOURCE: ClassVar[str] = ""
    N_TASKS = 1
    MEAN, STD = CLIP_MEAN, CLIP_STD
    DEFAULTS = {"backbone": "ViT-B/16", "batch_size": 64, "eval_batch_size": 128, "lr": 1e-5, "optimizer": "adamw"}
    #: the MTIL framework's names of this set beyond the hyphen-free spelling of NAME (``imagenetsketch``)
    ALIASES: ClassVar[tuple[str, ...]] = ()

    def __init__(self, args, options=None):
        self.source: RawDataset = get_source(self.SOURCE)(Path(args.data_path), args.download, args.verify_data)
        self.TEMPLATES = self.source.TEMPLATES
        self.N_CLASSES_PER_TASK = len(self.source.native_class_names())
        super().__init__(args, options)

    def native_class_names(self):
        return self.source.native_class_names()

    def load_split(self, split: str):
        return self.source.load_split(split)

    def project_logits(self, logits: Tensor) -> Tensor:
        """Logits over this set's classes (run label order) as they are scored."""
        project = getattr(self.source, "project_logits", None)
        if project is None:
            return logits
        return project(logits[:, self._native_to_label])[:, self.class_order]

    def eval_metrics(self, predictions: np.ndarray) -> dict[str, Any]:
        """The set's own metrics (percent) from the predicted run labels of the whole test split, in split order."""
        metrics = getattr(self.source, "eval_metrics", None)
        return {} if metrics is None else metrics(self.class_order[np.asarray(predictions, dtype=np.int64)])

    def imagenet_groups(self) -> list[list[int]] | None:
        """Each class's ImageNet labels (run label order), for WiSE-FT's projection of 1000-class logits."""
        groups = getattr(self.source, "imagenet_groups", None)
        return None if groups is None else [groups()[i] for i in self.class_order]


class ImageNet(ShiftDataset):
    NAME = "imagenet"
    SOURCE = "imagenet"


class ImageNetA(ShiftDataset):
    NAME = "imagenet-a"
    SOURCE = "imagenet_a"


class ImageNetR(ShiftDataset):
    NAME = "imagenet-r"
    SOURCE = "imagenet_r_test"


class ImageNetSketch(ShiftDataset):
    NAME = "imagenet-sketch"
    SOURCE = "imagenet_sketch"


class ImageNetV2(ShiftDataset):
    NAME = "imagenet-v2"
    SOURCE = "imagenet_v2"


class ObjectNet(ShiftDataset):
    NAME = "objectnet"
    SOURCE = "objectnet"


class YTBBRobust(ShiftDataset):
    NAME = "ytbb-robust"
    SOURCE = "ytbb_robust"
    ALIASES = ("YTBB",)


class ImageNetVidRobust(ShiftDataset):
    NAME = "imagenet-vid-robust"
    SOURCE = "imagenet_vid_robust"


class FMoW(ShiftDataset):
    NAME = "fmow"
    SOURCE = "fmow"
    ALIASES = ("FMOWOOD",)


class IWildCam(ShiftDataset):
    NAME = "iwildcam"
    SOURCE = "iwildcam"
    ALIASES = ("IWildCamOOD",)
