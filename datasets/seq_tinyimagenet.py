"""``seq-tinyimagenet``: TinyImageNet's 200 classes, read from the files of ``tiny-imagenet-200.zip``.

``--tinyimagenet_split equal``: 10 tasks of 20 classes (mammoth's seq-tinyimg layout).
``--tinyimagenet_split b100``: 100 base classes, then ``--tinyimagenet_steps`` 5, 10 or 20 tasks over the
other 100 (the ZSCL / MoE-Adapters class-incremental TinyImageNet protocol), with ZSCL's class order by
``--class_order zscl`` (its ``cil/class_orders/tinyimagenet.yaml``: 131, 181, 22, ..., i.e. Persian cat, stick
insect, goldfish, ...). The test split is the labelled ``val`` set (50 images per class).

Native order and names follow continuum and ZSCL (``--tinyimagenet_native wnids``): labels in ``wnids.txt`` order,
CLIP's curated ImageNet names ("Egyptian Mau", "fishing casting reel", ...). ``--tinyimagenet_native sorted`` is
Tusk's earlier choice: sorted wnids (PyCIL's ImageFolder order) and the first synonym of ``words.txt``.
"""
from __future__ import annotations

from dataclasses import dataclass

from datasets.utils.source_dataset import SourceDataset
from utils.errors import UserError
from utils.options import option


@dataclass
class TinyImageNetOptions:
    tinyimagenet_split: str = option("equal", "'equal': 10 tasks of 20 classes; 'b100': a first task of 100 "
                                     "classes, then --tinyimagenet_steps tasks over the other 100",
                                     choices=("equal", "b100"))
    tinyimagenet_steps: int = option(10, "with --tinyimagenet_split b100: tasks after the 100 base classes",
                                     choices=(5, 10, 20))
    tinyimagenet_native: str = option("wnids", "native label order and names: 'wnids' (wnids.txt order, CLIP's "
                                      "ImageNet names: continuum / ZSCL) or 'sorted' (sorted wnids, words.txt names)",
                                      choices=("wnids", "sorted"))


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
        if options.tinyimagenet_native == "sorted":
            if args.class_order == "zscl":
                raise UserError("--class_order zscl indexes TinyImageNet's wnids.txt order: use it with "
                                "--tinyimagenet_native wnids (the default)")
            self.SOURCE = "tinyimagenet_sorted"
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
