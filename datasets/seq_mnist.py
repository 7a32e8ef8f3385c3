"""``seq-mnist``: MNIST in 5 tasks of 2 digits, kept decoded in memory (3 x 28 x 28)."""
from __future__ import annotations

from datasets.utils.source_dataset import SourceDataset


class SequentialMNIST(SourceDataset):
    NAME = "seq-mnist"
    SOURCE = "mnist"
    N_TASKS = 5
    N_CLASSES_PER_TASK = 2
    IMAGE_SIZE = 28
    MEAN = (0.1307, 0.1307, 0.1307)
    STD = (0.3081, 0.3081, 0.3081)
    DEFAULTS = {"backbone": "small-cnn", "n_epochs": 1, "batch_size": 10}
