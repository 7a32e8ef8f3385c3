"""``seq-imagenet100``: the ImageNet-100 of PODNet / CLAP4CLIP / ZSCL in 10 tasks of 10 classes.

The 100 classes and their files come from ``imagenet_split/{train,val}_100.txt`` (read from --data_path,
not shipped) over the user's ImageNet folder; the lists' labels are the native order, and
``--class_order seed1993`` gives the usual order (68, 56, 78, 8, ...).
"""
from __future__ import annotations

from datasets.utils.source_dataset import SourceDataset


class SequentialImageNet100(SourceDataset):
    NAME = "seq-imagenet100"
    SOURCE = "imagenet100"
    N_TASKS = 10
    N_CLASSES_PER_TASK = 10
    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)
    DEFAULTS = {"backbone": "timm:resnet18", "n_epochs": 50, "batch_size": 32}
