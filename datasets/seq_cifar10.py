"""``seq-cifar10``: CIFAR-10 in 5 tasks of 2 classes, from the python-pickle files."""
from __future__ import annotations

from datasets.utils.source_dataset import SourceDataset
from utils.augment import RandomCropFlip


class SequentialCIFAR10(SourceDataset):
    NAME = "seq-cifar10"
    SOURCE = "cifar10"
    N_TASKS = 5
    N_CLASSES_PER_TASK = 2
    MEAN = (0.4914, 0.4822, 0.4465)
    STD = (0.2470, 0.2435, 0.2615)
    DEFAULTS = {"backbone": "resnet18", "n_epochs": 50, "batch_size": 32, "lr": 0.1}

    def train_augmentation(self):
        return RandomCropFlip(padding=4)
