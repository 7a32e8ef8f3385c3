"""CIFAR-10 and CIFAR-100 as raw datasets (python-pickle files; see datasets/utils/cifar.py)."""
from __future__ import annotations

from datasets.sources import RawDataset
from datasets.utils.cifar import CIFAR10, CIFAR100, cifar_class_names, ensure_cifar, load_cifar

#: CLIP's 18 CIFAR templates, as ZSCL/MTIL evaluate CIFAR-100.
CIFAR_TEMPLATES = tuple(p.replace("{a}", a) for a in ("a", "the") for p in (
    "a photo of {a} {}.", "a blurry photo of {a} {}.", "a black and white photo of {a} {}.",
    "a low contrast photo of {a} {}.", "a high contrast photo of {a} {}.", "a bad photo of {a} {}.",
    "a good photo of {a} {}.", "a photo of {a} small {}.", "a photo of {a} big {}."))


class Cifar100(RawDataset):
    NAME = "cifar100"
    FORMAT = CIFAR100
    TEMPLATES = CIFAR_TEMPLATES

    def prepare(self):
        self.folder = ensure_cifar(self.FORMAT, self.root, self.download, self.verify_data)

    def native_class_names(self):
        return cifar_class_names(self.FORMAT, self.folder)

    def load_split(self, split):
        return load_cifar(self.FORMAT, self.folder, split)


class Cifar10(Cifar100):
    NAME = "cifar10"
    FORMAT = CIFAR10
