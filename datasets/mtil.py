"""``mtil``: Multi-domain Task-Incremental Learning (ZSCL, Zheng et al., ICCV 2023): eleven datasets,
one task each with its own classes (1201 in all), class names and CLIP templates.

- ``--mtil_order I`` (alphabetical): Aircraft, Caltech101, CIFAR100, DTD, EuroSAT, Flowers, Food, MNIST,
  OxfordPet, StanfordCars, SUN397. ``--mtil_order II``: StanfordCars, Food, MNIST, OxfordPet, Flowers,
  SUN397, Aircraft, Caltech101, DTD, EuroSAT, CIFAR100. ``--mtil_order DTD,EuroSAT`` (any comma-separated
  list): those datasets in that order.
- Splits as ZSCL: the official train/test splits (Aircraft ``train``, OxfordPet ``trainval``, DTD
  partition 1), and seeded 80/20 splits (seed 42) for Caltech101, EuroSAT and SUN397. SUN397's is over its
  images in sorted order (``--sun397_split sorted``, the same on every machine); ZSCL's is over torchvision's
  file-system listing order, which ``--sun397_split listing`` reproduces on the machine it runs on.
- Class names and templates are ZSCL's (``mtil/src/datasets/collections.py``): each task's templates are
  its raw dataset's (``datasets/sources``, which follow ZSCL), and so are its class names except where
  ZSCL prompts with torchvision's raw ones (``CLASS_NAMES``: MNIST "0 - zero", SUN397
  "apartment building/outdoor"). Methods that train with one prompt use the first template.
- ``--mtil_few_shot K`` keeps K training images per class, drawn with ``--seed`` per dataset (so both
  orders see the same images); test sets stay whole. MoE-Adapters' few-shot MTIL uses K = 5.
- ZSCL's recipe is not a default here (the defaults below are its batch size, lr and optimiser): it
  trains 1000 iterations per task (``--n_iters 1000``) with lr 5e-5 for Aircraft and MNIST.
- ZSCL's Transfer / Avg / Last (``metrics.task_il.mtil`` in results.json) need the whole accuracy matrix,
  i.e. ``--eval_future 1`` (not a default: methods that cannot score unseen classes refuse it).

CIFAR10 is evaluated by ZSCL after every task but never trained and left out of every metric. The task
loop trains on every task, so ``--mtil_eval_cifar10 1`` appends CIFAR10 as a 12th task and requires
``--eval_future 1 --stop_after 11``: the eleven MTIL tasks are trained, and every evaluation (including
the zero-shot row) also scores CIFAR10, which is never trained (the run ends as "stopped" after 11 of
12 tasks). Its column is in the accuracy matrix; ``eval_only_tasks`` names it, and the recorder leaves it
out of the MTIL Transfer/Avg/Last summary, as ZSCL does.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from datasets.sources import get_source
from datasets.utils.image_source import SubsetImages
from datasets.utils.source_dataset import SequenceDataset
from datasets.utils.task_order import resolve_task_order
from utils.errors import UserError
from utils.options import option

ORDERS = {
    "I": ("aircraft", "caltech101", "cifar100", "dtd", "eurosat", "flowers102", "food101", "mnist", "oxford_pets",
          "stanford_cars", "sun397"),
    "II": ("stanford_cars", "food101", "mnist", "oxford_pets", "flowers102", "sun397", "aircraft", "caltech101",
           "dtd", "eurosat", "cifar100"),
}
EVAL_ONLY = "cifar10"
MANUAL = "stanford_cars"           # the one dataset that must be downloaded by hand

#: ZSCL's class names where they are not the raw dataset's readable ones (in the source's native order).
#: The other sources already give ZSCL's names and templates (e.g. EuroSAT's "annual crop land").
CLASS_NAMES = {
    # torchvision's MNIST.classes, which ZSCL prompts with: 'a photo of the number: "0 - zero".'
    "mnist": lambda source: [f"{i} - {w}" for i, w in enumerate(
        ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"))],
    # torchvision's SUN397.classes with "_" -> " " ("apartment building/outdoor")
    "sun397": lambda source: [p.replace("_", " ") for p in source.class_paths],
}


#: The MTIL framework's dataset names (its ``--train-dataset`` / ``--eval-datasets`` values) -> source names.
MEMBERS = {"Aircraft": "aircraft", "Caltech101": "caltech101", "CIFAR10": "cifar10", "CIFAR100": "cifar100",
           "DTD": "dtd", "EuroSAT": "eurosat", "Flowers": "flowers102", "Food": "food101", "MNIST": "mnist",
           "OxfordPet": "oxford_pets", "StanfordCars": "stanford_cars", "SUN397": "sun397"}

#: what ``--mtil_order NAME,...`` accepts: source names and the framework's names (CIFAR10 is evaluated only)
TRAINABLE_NAMES = {**{name: name for name in ORDERS["I"]}, **{k: v for k, v in MEMBERS.items() if v != EVAL_ONLY}}


@dataclass
class MTILOptions:
    mtil_order: str = option("I", "task order: I (alphabetical: Aircraft, Caltech101, CIFAR100, DTD, EuroSAT, "
                             "Flowers, Food, MNIST, OxfordPet, StanfordCars, SUN397) or II (StanfordCars, Food, MNIST, "
                             "OxfordPet, Flowers, SUN397, Aircraft, Caltech101, DTD, EuroSAT, CIFAR100), or a "
                             "comma-separated list of datasets (a subset or another order, e.g. DTD,EuroSAT)")
    mtil_few_shot: int = option(0, "training images kept per class, drawn with --seed (few-shot MTIL uses 5); "
                                "0 = whole training sets. Test sets are always whole", min=0)
    mtil_eval_cifar10: bool = option(False, "append CIFAR10 as a 12th task that is only evaluated (ZSCL's zero-shot "
                                     "probe); needs --eval_future 1 --stop_after 11")
    sun397_split: str = option("sorted", "SUN397's seeded 80/20 split over its images in 'sorted' order "
                               "(ClassName.txt, then file name: the same everywhere) or in 'listing' order (ZSCL's: "
                               "torchvision's rglob over this file system)", choices=("sorted", "listing"))


class MTIL(SequenceDataset):
    NAME = "mtil"
    Options = MTILOptions
    SETTING = "task-il"
    #: CLIP's normalisation: MTIL is a CLIP benchmark
    MEAN = (0.48145466, 0.4578275, 0.40821073)
    STD = (0.26862954, 0.26130258, 0.27577711)
    DEFAULTS = {"backbone": "ViT-B/16", "batch_size": 64, "eval_batch_size": 128, "lr": 1e-5, "optimizer": "adamw"}

    MEMBERS = MEMBERS

    def __init__(self, args, options=None, tasks=None):
        """``tasks``: these source datasets only, in this order (one of them for ``--eval_datasets DTD``)."""
        options = options if options is not None else MTILOptions()
        self.refuse_global_class_order(args)
        self.member_tasks = list(tasks) if tasks else None
        names = list(tasks or resolve_task_order(options.mtil_order, ORDERS, TRAINABLE_NAMES))
        if options.mtil_eval_cifar10 and not tasks:
            if not args.eval_future or args.stop_after != len(names):
                raise UserError(f"--mtil_eval_cifar10 1 appends CIFAR10 as task {len(names) + 1}, which must never be "
                                f"trained: run with --eval_future 1 --stop_after {len(names)}")
            names.append(EVAL_ONLY)
        #: task indices that are evaluated only (CIFAR10 with --mtil_eval_cifar10 1)
        self.eval_only_tasks = [names.index(EVAL_ONLY)] if EVAL_ONLY in names else []
        self.task_names = names
        root = Path(args.data_path)
        # StanfordCars cannot be downloaded: report it missing before downloading ~40 GB of the others
        built = {n: get_source(n)(root, args.download, args.verify_data) for n in sorted(names, key=MANUAL.__ne__)}
        if "sun397" in built:
            built["sun397"].image_order = options.sun397_split
        self.sources = [built[n] for n in names]
        self._task_class_names = [list(CLASS_NAMES[n](s)) if n in CLASS_NAMES else list(s.native_class_names())
                                  for n, s in zip(names, self.sources)]
        for n, s, mtil_names in zip(names, self.sources, self._task_class_names):
            if len(mtil_names) != len(s.native_class_names()):
                raise UserError(f"mtil: {n} has {len(s.native_class_names())} classes at {args.data_path}, but MTIL "
                                f"names {len(mtil_names)}: use the complete dataset")
        super().__init__(args, options)

    def native_class_names(self):
        return [name for names in self._task_class_names for name in names]

    def source_split(self, source, split):
        images, labels = source.load_split(split)
        k = self.options.mtil_few_shot
        if split != "train" or k == 0:
            return images, labels
        rng = np.random.default_rng([self.args.seed, zlib.crc32(source.NAME.encode())])
        keep = few_shot_indices(labels, k, rng)
        if isinstance(images, Tensor):
            return images[keep], labels[keep]
        return SubsetImages(images, keep.tolist()), labels[keep]

    def pil_train_transform(self):
        """ZSCL's training crop: RandomResizedCrop(scale 0.9-1, bicubic), no flip."""
        from torchvision import transforms as T
        return T.Compose([T.RandomResizedCrop(self.IMAGE_SIZE, scale=(0.9, 1.0),
                                              interpolation=T.InterpolationMode.BICUBIC), T.ToTensor()])


def few_shot_indices(labels: Tensor, k: int, rng: np.random.Generator) -> Tensor:
    """Positions of ``k`` items per class (all of a class with fewer), drawn by ``rng``, in split order."""
    labels_np = labels.numpy()
    keep = [rng.choice(np.flatnonzero(labels_np == c), size=min(k, int((labels_np == c).sum())), replace=False)
            for c in np.unique(labels_np)]
    return torch.from_numpy(np.sort(np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)))
