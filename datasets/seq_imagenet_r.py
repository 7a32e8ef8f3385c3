"""``seq-imagenet-r``: ImageNet-R's 200 classes in 10 tasks of 20, with CLIP's 80 ImageNet templates.

ImageNet-R has no official split; ``--imagenet_r_split`` chooses one (see ``datasets/sources/imagenet_r.py``):
``clap4clip`` and ``mammoth`` read those projects' file lists from --data_path (their test sets differ;
mammoth's lists also fix mammoth's class order as the native one); ``random`` is a built-in seeded 80/20
split per class that matches neither.
"""
from __future__ import annotations

from dataclasses import dataclass

from datasets.utils.source_dataset import SourceDataset
from utils.options import option

SPLIT_SOURCES = {"random": "imagenet_r", "clap4clip": "imagenet_r_clap4clip", "mammoth": "imagenet_r_mammoth"}


@dataclass
class ImageNetROptions:
    imagenet_r_split: str = option("random", "train/test split: 'clap4clip' (imagenet_split/imagenetr_{train,test}"
                                   ".txt), 'mammoth' (imagenet_r_utils/imagenet-r_{train,test}.yaml), both read from "
                                   "--data_path, or 'random' (built in: seeded 80/20 per class, matches neither)",
                                   choices=tuple(SPLIT_SOURCES))


class SequentialImageNetR(SourceDataset):
    NAME = "seq-imagenet-r"
    SOURCE = "imagenet_r"
    N_TASKS = 10
    N_CLASSES_PER_TASK = 20
    Options = ImageNetROptions
    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)
    DEFAULTS = {"backbone": "timm:resnet18", "n_epochs": 50, "batch_size": 32}

    def __init__(self, args, options=None):
        options = options if options is not None else ImageNetROptions()
        self.SOURCE = SPLIT_SOURCES[options.imagenet_r_split]
        super().__init__(args, options)
