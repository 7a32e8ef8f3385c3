"""Benchmarks built from raw datasets (``datasets/sources``): one source split into class-incremental
tasks, or a sequence of sources, one per task (MTIL, VTAB)."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Sequence

import torch
from torch import Tensor

from datasets.sources import RawDataset, get_source
from datasets.utils.continual_dataset import ContinualDataset
from datasets.utils.image_source import ConcatImages, ImageSource, TensorImages


class SourceDataset(ContinualDataset):
    """Class-incremental tasks over one raw dataset (``SOURCE``); templates default to the source's."""

    SOURCE: ClassVar[str] = ""

    def __init__(self, args, options=None):
        self.source: RawDataset = get_source(self.SOURCE)(Path(args.data_path), args.download, args.verify_data)
        if "TEMPLATES" not in type(self).__dict__:
            self.TEMPLATES = self.source.TEMPLATES
        super().__init__(args, options)

    def native_class_names(self) -> Sequence[str]:
        return self.source.native_class_names()

    def load_split(self, split: str):
        return self.source.load_split(split)


class SequenceDataset(ContinualDataset):
    """One task per raw dataset, each with its own classes and templates (e.g. MTIL).

    ``self.sources`` is set by the subclass before ``super().__init__`` (the order of tasks);
    ``N_TASKS``/``N_CLASSES_PER_TASK`` follow from it. A random class order permutes classes within
    each task only.
    """

    SETTING: ClassVar[str] = "class-il"
    PERMUTE_WITHIN_TASKS = True

    def __init__(self, args, options=None):
        self.N_TASKS = len(self.sources)
        self._names = [list(s.native_class_names()) for s in self.sources]
        self.N_CLASSES_PER_TASK = [len(n) for n in self._names]
        super().__init__(args, options)

    def native_class_names(self) -> Sequence[str]:
        return [name for names in self._names for name in names]

    def task_templates(self, task: int) -> tuple[str, ...]:
        return self.sources[task].TEMPLATES

    def load_split(self, split: str):
        parts, labels, offset = [], [], 0
        for source, names in zip(self.sources, self._names):
            images, native = self.source_split(source, split)
            parts.append(images)
            labels.append(native.long() + offset)
            offset += len(names)
        if all(isinstance(p, Tensor) for p in parts) and len({tuple(p.shape[1:]) for p in parts}) == 1:
            return torch.cat(parts), torch.cat(labels)
        return ConcatImages([p if isinstance(p, ImageSource) else TensorImages(p) for p in parts]), torch.cat(labels)

    def source_split(self, source: RawDataset, split: str):
        """A source's split as this sequence uses it (override for few-shot subsets, eval-only tasks, ...)."""
        return source.load_split(split)
