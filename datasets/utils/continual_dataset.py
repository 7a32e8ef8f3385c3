"""``ContinualDataset``: a benchmark as a sequence of tasks over a class order.

A subclass says what the classes are and how to load a split; this base class owns everything
that is the same for every benchmark: the class order (native, seeded random or from a file) with
the class names reordered to match, the split into tasks (equal or unequal sizes), the label
remapping, and per-task data for the task loop.

Two shapes of benchmark share this API:
- class-incremental splits of one dataset (``seq-synth``, ``seq-cifar100``): ``N_CLASSES_PER_TASK``
  is an int or a list, and ``--class_order`` permutes all classes;
- a sequence of different datasets (MTIL): each task is its own dataset with its own classes and
  templates. Such a subclass sets ``N_CLASSES_PER_TASK`` to the list of dataset sizes, returns each
  dataset's templates from :meth:`task_templates`, and sets ``PERMUTE_WITHIN_TASKS = True`` so that a
  random class order never moves a class to another task.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from torch import Tensor

from datasets.utils.image_source import ImageSource
from datasets.utils.task_data import LoaderTaskData, TensorTaskData, concat_task_data
from utils.augment import Normalize
from utils.errors import UserError
from utils.options import NoOptions, to_dict
from utils.run_options import RunOptions

DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)
#: Published class orders (``--class_order zscl``).
CLASS_ORDERS = Path(__file__).resolve().parent.parent / "metadata" / "class_orders"


class ContinualDataset:
    NAME: ClassVar[str] = ""
    SETTING: ClassVar[str] = "class-il"
    N_TASKS: ClassVar[int] = 0
    N_CLASSES_PER_TASK: ClassVar[int | Sequence[int]] = 0
    #: Sequences of datasets keep each task's classes together under a random class order.
    PERMUTE_WITHIN_TASKS: ClassVar[bool] = False
    #: ``--class_order zscl``: the file of ZSCL's class-incremental order in ``datasets/metadata/class_orders``
    ZSCL_CLASS_ORDER: ClassVar[str | None] = None
    #: Values for run options when this dataset is used (lowest priority after the option's own default).
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    #: The dataset's own options (become CLI flags).
    Options: ClassVar[type] = NoOptions
    TEMPLATES: ClassVar[tuple[str, ...]] = DEFAULT_TEMPLATES
    MEAN: ClassVar[tuple[float, ...]] = (0.5, 0.5, 0.5)
    STD: ClassVar[tuple[float, ...]] = (0.5, 0.5, 0.5)
    #: Side of the square images file-backed datasets produce for non-CLIP backbones.
    IMAGE_SIZE: ClassVar[int] = 224
    #: For datasets whose images the code generates: raised whenever the generated images change, so that
    #: features cached from the old ones are never reused (part of ``describe()``; None: not versioned).
    CONTENT_VERSION: ClassVar[int | None] = None

    def __init__(self, args: RunOptions, options: Any = None):
        self.args = args
        self.options = options if options is not None else self.Options()
        cpt = self.N_CLASSES_PER_TASK
        self.classes_per_task = [int(cpt)] * self.N_TASKS if isinstance(cpt, int) else [int(c) for c in cpt]
        if len(self.classes_per_task) != self.N_TASKS:
            raise ValueError(f"{self.NAME}: N_CLASSES_PER_TASK has {len(self.classes_per_task)} entries "
                             f"for {self.N_TASKS} tasks")
        self.n_classes = sum(self.classes_per_task)
        self._offsets = np.concatenate([[0], np.cumsum(self.classes_per_task)]).astype(int)
        native = list(self.native_class_names())
        if len(native) != self.n_classes:
            raise ValueError(f"{self.NAME}: {len(native)} class names for {self.n_classes} classes")
        #: ``class_order[i]`` is the native index of the class that gets label ``i`` in this run.
        self.class_order = self._make_class_order(args.class_order, args.seed, native)
        self._native_to_label = np.empty(self.n_classes, dtype=np.int64)
        self._native_to_label[self.class_order] = np.arange(self.n_classes)
        self.class_names = [native[i] for i in self.class_order]
        self.normalize = Normalize(self.MEAN, self.STD)
        self._splits: dict[str, tuple[Tensor, Tensor]] = {}

    @classmethod
    def refuse_global_class_order(cls, args: RunOptions) -> None:
        """Sequences of datasets call this first (before building their sources): ``seed1993`` permutes all
        classes together and would move classes between the datasets."""
        if args.class_order in ("seed1993", "seed1993_run"):
            raise UserError(f"--class_order {args.class_order} permutes all classes together, which would move classes "
                            f"between {cls.NAME}'s datasets: use native, random (within each dataset) or a file")

    # ---- what a subclass provides ------------------------------------------------------------
    def native_class_names(self) -> Sequence[str]:
        """Readable class names in the dataset's native label order."""
        raise NotImplementedError

    def load_split(self, split: str) -> tuple[Tensor | ImageSource, Tensor]:
        """``(images, native labels int64 (N,))`` of ``split`` ('train' or 'test'). ``images`` is a
        uint8 tensor (N, C, H, W) for datasets small enough to keep decoded in memory (batches are
        slices, augmentation is batched), or an ``ImageSource`` read through DataLoader workers."""
        raise NotImplementedError

    def train_augmentation(self):
        """Batched augmentation applied to training images (``None`` for none)."""
        return None

    def task_templates(self, task: int) -> tuple[str, ...]:
        """CLIP prompt templates for the classes of ``task`` (per dataset in a sequence)."""
        return self.TEMPLATES

    # ---- task structure ----------------------------------------------------------------------
    def get_offsets(self, task: int) -> tuple[int, int]:
        """``[start, end)`` labels of ``task`` in this run's class order."""
        return int(self._offsets[task]), int(self._offsets[task + 1])

    def task_of_label(self, labels: Tensor) -> Tensor:
        bounds = torch.as_tensor(self._offsets[1:], device=labels.device)
        return torch.bucketize(labels, bounds, right=True)

    def to_labels(self, native: Tensor) -> Tensor:
        """Map native labels to this run's labels (positions in the class order)."""
        return torch.as_tensor(self._native_to_label, device=native.device)[native]

    # ---- data --------------------------------------------------------------------------------
    def split(self, split: str) -> tuple[Tensor, Tensor]:
        """Images and run labels of a whole split, loaded once and kept."""
        if split not in self._splits:
            images, native = self.load_split(split)
            self._splits[split] = (images, self.to_labels(native.long()))
        return self._splits[split]

    def split_labels(self, split: str) -> Tensor:
        """Run labels of a whole split; datasets that can list labels without decoding images override
        :meth:`load_split_labels` so that cached-feature runs never touch the images."""
        if split in self._splits:
            return self._splits[split][1]
        native = self.load_split_labels(split)
        return self.to_labels(native.long()) if native is not None else self.split(split)[1]

    def load_split_labels(self, split: str) -> Tensor | None:
        """Native labels of ``split`` without loading images, or ``None`` if that is not cheaper."""
        return None

    def task_data(self, tasks: int | Sequence[int], split: str) -> TensorTaskData:
        """The items of one task (or the union of several) of ``split``."""
        return self.make_task_data(tasks, split, TensorTaskData)

    def make_task_data(self, tasks: int | Sequence[int], split: str, kind: type) -> TensorTaskData:
        tasks = [tasks] if isinstance(tasks, int) else list(tasks)
        images, labels = self.split(split)
        train = split == "train"
        parts = []
        for t in tasks:
            lo, hi = self.get_offsets(t)
            idx = torch.nonzero((labels >= lo) & (labels < hi)).flatten()
            if isinstance(images, Tensor):
                parts.append(kind(images[idx], labels[idx], idx, self.train_augmentation() if train else None,
                                  self.normalize))
            else:
                parts.append(LoaderTaskData(images, labels[idx], idx, self.pil_train_transform() if train else None,
                                            self.pil_test_transform(), self.normalize, self.args.num_workers))
        return concat_task_data(parts)

    def image_batches(self, split: str, batch_size: int, size: int | None = None):
        """Float [0, 1] images of a whole split in split order, for encoders that cache features.
        File-backed splits are resized (shorter side, bicubic) and centre-cropped to ``size`` in the
        workers; in-memory ones come at their own size (the encoder resizes them)."""
        images, labels = self.split(split)
        if isinstance(images, Tensor):
            for start in range(0, images.shape[0], batch_size):
                yield images[start:start + batch_size].float().div_(255)
            return
        tf = self.pil_test_transform() if size is None else _resize_crop(size)
        data = LoaderTaskData(images, labels, torch.arange(len(images)), None, tf, lambda x: x, self.args.num_workers)
        for batch in data.batches(batch_size):
            yield batch["not_aug_inputs"]

    # ---- file-backed datasets: PIL pipelines producing [0, 1] tensors (normalisation is batched) --
    def pil_train_transform(self):
        from torchvision import transforms as T
        return T.Compose([T.RandomResizedCrop(self.IMAGE_SIZE, interpolation=T.InterpolationMode.BICUBIC),
                          T.RandomHorizontalFlip(), T.ToTensor()])

    def pil_test_transform(self):
        return _resize_crop(self.IMAGE_SIZE)

    def describe(self) -> dict:
        """What identifies this dataset's images (part of feature-cache keys); a sequence built with only some
        of its datasets (``member_tasks``, for ``--eval_datasets DTD``) says which."""
        described = {"name": self.NAME, "options": to_dict(self.options)}
        if self.CONTENT_VERSION is not None:
            described["content_version"] = self.CONTENT_VERSION
        members = getattr(self, "member_tasks", None)
        return {**described, "tasks": list(members)} if members else described

    def fetch(self, indexes: Tensor, split: str = "train") -> Tensor:
        """Not-augmented float images of split positions ``indexes`` (for index-storing memories)."""
        images, _ = self.split(split)
        if isinstance(images, Tensor):
            return images[indexes.to(images.device)].float().div_(255)
        tf = self.pil_test_transform()
        return torch.stack([tf(images.image(int(i))) for i in indexes.tolist()])

    # ---- class order -------------------------------------------------------------------------
    def _make_class_order(self, spec: str, seed: int, native: list[str]) -> np.ndarray:
        n = self.n_classes
        if spec == "native":
            return np.arange(n)
        if spec == "seed1993":    # iCaRL / PyCIL / CLAP4CLIP (--num-run 0): legacy numpy RandomState(1993)
            return np.random.RandomState(1993).permutation(n)
        if spec == "seed1993_run":    # CLAP4CLIP's load_class_order: np.random.seed(1993 + num_run), its run = --seed
            return np.random.RandomState(1993 + seed).permutation(n)
        if spec == "zscl":        # ZSCL's cil/class_orders (the datasets that have one name its file)
            if self.ZSCL_CLASS_ORDER is None:
                raise UserError(f"--class_order zscl: ZSCL publishes class orders for seq-cifar100 and "
                                f"seq-tinyimagenet only, not {self.NAME}")
            return self._class_order_from_file(str(CLASS_ORDERS / self.ZSCL_CLASS_ORDER), native)
        if spec == "random":
            rng = np.random.default_rng(seed)
            if not self.PERMUTE_WITHIN_TASKS:
                return rng.permutation(n)
            return np.concatenate([lo + rng.permutation(hi - lo)
                                   for lo, hi in zip(self._offsets[:-1], self._offsets[1:])])
        return self._class_order_from_file(spec, native)

    def _class_order_from_file(self, path: str, native: list[str]) -> np.ndarray:
        if not os.path.isfile(path):
            raise UserError(f"--class_order: '{path}' is not 'native', 'random' or an existing file")
        raw = Path(path).read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[:exc.start].count(b"\n") + 1
            raise UserError(f"--class_order: {path} is not a UTF-8 text file (byte {exc.start}, line {line}, "
                            f"is not text): list one class index or name per line") from None
        if "\x00" in text:
            raise UserError(f"--class_order: {path} holds binary data (NUL bytes, line "
                            f"{text[:text.index(chr(0))].count(chr(10)) + 1}): list one class index or name per line")
        lookup = {name: i for i, name in enumerate(native)}
        order, where = [], {}
        for number, line in enumerate(text.splitlines(), 1):
            e = line.strip()
            if not e or e.startswith("#"):
                continue
            if e.lstrip("-").isdigit():
                k = int(e)
                if not 0 <= k < self.n_classes:
                    raise UserError(f"--class_order: line {number} of {path}: class index {e} is out of range "
                                    f"(0-{self.n_classes - 1} for {self.NAME})")
            elif e in lookup:
                k = lookup[e]
            else:
                raise UserError(f"--class_order: line {number} of {path}: '{e[:80]}' is neither a class index nor "
                                f"a class name of {self.NAME}")
            if k in where:
                raise UserError(f"--class_order: line {number} of {path}: class {k} ({native[k]}) is listed again "
                                f"(first on line {where[k]})")
            where[k] = number
            order.append(k)
        if len(order) != self.n_classes:
            missing = [k for k in range(self.n_classes) if k not in where]
            raise UserError(f"--class_order: {path} must list each of the {self.n_classes} classes of "
                            f"{self.NAME} exactly once (got {len(order)} entries; missing: "
                            f"{', '.join(map(str, missing[:5]))}{', ...' if len(missing) > 5 else ''})")
        order_arr = np.asarray(order)
        if self.PERMUTE_WITHIN_TASKS:
            for lo, hi in zip(self._offsets[:-1], self._offsets[1:]):
                if sorted(order_arr[lo:hi]) != list(range(lo, hi)):
                    raise UserError(f"--class_order: {self.NAME} is a sequence of datasets; classes cannot "
                                    f"move between tasks")
        return order_arr


def _resize_crop(size: int):
    from torchvision import transforms as T
    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size), T.ToTensor()])
