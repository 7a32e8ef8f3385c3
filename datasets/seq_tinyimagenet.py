"""``seq-tinyimagenet``: TinyImageNet's 200 classes, read from the files of ``tiny-imagenet-200.zip``.

``--tinyimagenet_split equal``: 10 tasks of 20 classes (mammoth's seq-tinyimg layout).
``--tinyimagenet_split b100``: 100 base classes, then ``--tinyimagenet_steps`` 5, 10 or 20 tasks over the
other 100 (the ZSCL / MoE-Adapters class-incremental TinyImageNet protocol), with ZSCL's class order by
``--class_order zscl`` (its ``cil/class_orders/tinyimagenet.yaml``: 131, 181, 22, ...). The test split is the
labelled ``val`` set (50 images per class).
"""
from __future__ import annotations

from dataclasses import dataclass

from datasets.utils.source_dataset import SourceDataset
from utils.options import option


@dataclass
class TinyImageNetOptions:
    tinyimagenet_split: str = option("equal", "'equal': 10 tasks of 20 classes; 'b100': a first task of 100 "
                                     "classes, then --tinyimagenet_steps tasks over the other 100",
                                     choices=("equal", "b100"))
    tinyimagenet_steps: int = option(10, "with --tinyimagenet_split b100: tasks after the 100 base classes",
                                     choices=(5, 10, 20))


class SequentialTinyImageNet(SourceDataset):
    NAME = "seq-tinyimagenet"
    SOURCE = "tinyimagenet"
    N_TASKS = 10
    N_CLASSES_PER_TASK = 20
    Options = TinyImageNetOptions
    ZSCL_CLASS_ORDER = "zscl_tinyimagenet.txt"
    IMAGE_SIZE = 64
    MEAN = (0.4802, 0.4480, 0.3975)
    STD = (0.2770, 0.2691, 0.2821)
    DEFAULTS = {"backbone": "resnet18", "n_epochs": 50, "batch_size": 32}

    def __init__(self, args, options=None):
        options = options if options is not None else TinyImageNetOptions()
        if options.tinyimagenet_split == "b100":
            steps = options.tinyimagenet_steps
            self.N_TASKS = 1 + steps
            self.N_CLASSES_PER_TASK = [100] + [100 // steps] * steps
        super().__init__(args, options)

    def pil_train_transform(self):
        """mammoth's TinyImageNet augmentation: a padded 64-pixel random crop and a flip."""
        from torchvision import transforms as T
        return T.Compose([T.Resize(self.IMAGE_SIZE), T.CenterCrop(self.IMAGE_SIZE),
                          T.RandomCrop(self.IMAGE_SIZE, padding=4), T.RandomHorizontalFlip(), T.ToTensor()])
