"""``seq-cifar100``: CIFAR-100 in 10, 20 or 50 tasks (``--cifar100_tasks``), from the python-pickle files.

Standard class orders: ``--class_order seed1993`` is the iCaRL order used by PyCIL and CLAP4CLIP (its first
classes: 68, 56, 78, 8, ...); ``--class_order zscl`` is ZSCL's class-incremental order (its
``cil/class_orders/cifar100.yaml``: 87, 0, 52, 58, ...; ``datasets/metadata/class_orders/zscl_cifar100.txt``).
"""
from __future__ import annotations

from dataclasses import dataclass

from datasets.utils.source_dataset import SourceDataset
from utils.augment import RandomCropFlip
from utils.options import option


@dataclass
class Cifar100Options:
    cifar100_tasks: int = option(10, "number of equal tasks", choices=(10, 20, 50))


class SequentialCIFAR100(SourceDataset):
    NAME = "seq-cifar100"
    SOURCE = "cifar100"
    N_TASKS = 10
    N_CLASSES_PER_TASK = 10
    Options = Cifar100Options
    ZSCL_CLASS_ORDER = "zscl_cifar100.txt"
    MEAN = (0.5071, 0.4865, 0.4409)
    STD = (0.2673, 0.2564, 0.2762)
    DEFAULTS = {"backbone": "resnet18", "n_epochs": 50, "batch_size": 32, "lr": 0.1,
                "lr_scheduler": "multisteplr", "lr_milestones": [35, 45]}

    def __init__(self, args, options=None):
        options = options if options is not None else Cifar100Options()
        self.N_TASKS = options.cifar100_tasks
        self.N_CLASSES_PER_TASK = 100 // options.cifar100_tasks
        super().__init__(args, options)

    def train_augmentation(self):
        return RandomCropFlip(padding=4)
