"""``seq-imagenet-r``: ImageNet-R's 200 classes in 10 tasks of 20, with CLIP's 80 ImageNet templates.

ImageNet-R has no official split; ``--imagenet_r_split`` chooses one (see ``datasets/sources/imagenet_r.py``):
``clap4clip`` and ``mammoth`` read those projects' file lists from --data_path (their test sets differ;
mammoth's lists also fix mammoth's class order as the native one); ``random`` is a built-in seeded 80/20
split per class that matches neither.

Class names are CLAP4CLIP's and mammoth's, which agree on all 200 ("hammerhead", "peacock", "husky", ...;
``datasets/metadata/imagenet_r_classnames.txt``); ``--imagenet_r_names clip`` gives CLIP's curated ImageNet names
instead (47 differ: "hammerhead shark", "peafowl", "Siberian Husky", ...), Tusk's earlier default.
Normalisation for non-CLIP backbones is mammoth's for ImageNet-R: none (mean 0, std 1).
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
    imagenet_r_names: str = option("clap4clip", "class names: 'clap4clip' (CLAP4CLIP's and mammoth's, which agree) or "
                                   "'clip' (CLIP's curated ImageNet names; 47 of 200 differ)",
                                   choices=("clap4clip", "clip"))


class SequentialImageNetR(SourceDataset):
    NAME = "seq-imagenet-r"
    SOURCE = "imagenet_r"
    N_TASKS = 10
    N_CLASSES_PER_TASK = 20
    Options = ImageNetROptions
    #: mammoth's seq-imagenet-r: no normalisation (CLIP backbones use their own preprocessing)
    MEAN = (0.0, 0.0, 0.0)
    STD = (1.0, 1.0, 1.0)
    DEFAULTS = {"backbone": "timm:resnet18", "n_epochs": 50, "batch_size": 32}

    def __init__(self, args, options=None):
        options = options if options is not None else ImageNetROptions()
        self.SOURCE = SPLIT_SOURCES[options.imagenet_r_split]
        super().__init__(args, options)

    def native_class_names(self):
        if self.options.imagenet_r_names == "clip":
            return self.source.clip_class_names()
        return self.source.native_class_names()
