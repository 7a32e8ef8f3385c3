"""ImageNet-R (200 ImageNet classes as renditions: art, cartoons, sketches, toys, ...; 30,000 images) from
``imagenet-r.tar`` (``imagenet-r/<wnid>/*.jpg``).

ImageNet-R has no official train/test split, so each split is its own source:
- ``imagenet_r``: a seeded 80/20 split of every class, built in. It matches neither list below.
- ``imagenet_r_clap4clip``: CLAP4CLIP's lists ``imagenet_split/imagenetr_{train,test}.txt`` (24,000 / 6,000
  ``<split>/<wnid>/<file> <label>`` lines; labels in sorted-wnid order).
- ``imagenet_r_mammoth``: mammoth's lists ``imagenet_r_utils/imagenet-r_{train,test}.yaml`` (``data:`` paths and
  ``targets:`` labels; mammoth's own label order, which is then the native order).
Class names are CLAP4CLIP's and mammoth's (they agree on all 200), not CLIP's curated ImageNet names.
The two published test sets differ. Their lists are not redistributed: they are read from --data_path
(verified against the published files' md5) and only their last two path components are used.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from datasets.sources import RawDataset
from datasets.utils.download import Remote, check_local
from datasets.utils.folders import check_count, class_folders, ensure_extracted, read_file_list, scan_class_folders
from datasets.utils.image_source import FileImages
from datasets.utils.imagenet import (IMAGENET_TEMPLATES, ImageNetClassSubset, files_by_wnid, imagenet_r_names,
                                     wnid_names)
from utils.errors import UserError

IMAGENET_R = Remote("https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar", "imagenet-r.tar",
                    "md5:a61312130a589d0ca1a8fca1f2bd3337")
FOLDER = "imagenet-r"


class _ImageNetR(RawDataset):
    """The archive, the class names and the splits; subclasses say how the splits are made."""

    TEMPLATES = IMAGENET_TEMPLATES

    def prepare(self):
        self.folder = ensure_extracted(
            IMAGENET_R, self.root, FOLDER, self.download, self.verify_data,
            f"ImageNet-R: '{self.root / FOLDER}' is missing (the unpacked {IMAGENET_R.filename}: "
            f"{FOLDER}/<wnid>/*.jpg, 200 class folders). Run without --download 0 to fetch {IMAGENET_R.url}, "
            f"or point --data_path at a folder that contains {FOLDER}/")
        self.splits, self.wnids = self.make_splits()

    def make_splits(self) -> tuple[dict[str, tuple[list[str], np.ndarray]], list[str]]:
        """``{split: (paths, native labels)}`` and the wnid of each native label."""
        raise NotImplementedError

    def all_images(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """The 200 class folders (sorted wnids) and all 30,000 images with their labels, counts checked."""
        wnids = class_folders(self.folder)
        fix = f"delete {self.folder} to extract {IMAGENET_R.filename} again"
        check_count(f"ImageNet-R class folders in {self.folder}", len(wnids), 200, self.verify_data, fix)
        paths, labels = scan_class_folders(self.folder, wnids)
        check_count(f"ImageNet-R images in {self.folder}", len(paths), 30_000, self.verify_data, fix)
        return wnids, np.asarray(paths), np.asarray(labels, dtype=np.int64)

    def native_class_names(self):
        """CLAP4CLIP's and mammoth's names (``datasets/metadata/imagenet_r_classnames.txt``)."""
        return wnid_names(self.wnids, self.root, imagenet_r_names())

    def clip_class_names(self):
        """CLIP's curated ImageNet names (47 of the 200 differ: "hammerhead shark" for "hammerhead", ...)."""
        return wnid_names(self.wnids, self.root)

    def load_split(self, split):
        paths, labels = self.splits[split]
        return FileImages(paths), torch.from_numpy(labels)


class ImageNetR(_ImageNetR):
    """The built-in split: per class, a seeded random 20% of the (sorted) files is the test set."""

    NAME = "imagenet_r"
    SPLIT_SEED = 0
    TEST_FRACTION = 0.2

    def make_splits(self):
        wnids, paths, labels = self.all_images()
        rng = np.random.default_rng(self.SPLIT_SEED)
        test = np.zeros(len(labels), dtype=bool)
        for c in range(len(wnids)):
            idx = np.flatnonzero(labels == c)
            n_test = max(1, round(self.TEST_FRACTION * len(idx))) if len(idx) > 1 else 0
            test[rng.permutation(idx)[:n_test]] = True
        return {"train": (paths[~test].tolist(), labels[~test]), "test": (paths[test].tolist(), labels[test])}, wnids


class _ListedImageNetR(_ImageNetR):
    """A published split: two list files under ``<data_path>/<LIST_FOLDER>/``."""

    LIST_FOLDER: ClassVar[str] = ""
    LISTS: ClassVar[dict[str, tuple[str, str]]] = {}       # split -> (file name, md5)
    SOURCE_URL: ClassVar[str] = ""

    def read_list(self, path) -> list[tuple[str, int]]:
        raise NotImplementedError

    def prepare(self):
        for name, _ in self.LISTS.values():                     # before a possible download of the images
            path = self.root / self.LIST_FOLDER / name
            if not path.is_file():
                raise UserError(f"ImageNet-R split '{self.NAME}': '{path}' is missing. Tusk does not ship this list: "
                                f"download {' and '.join(n for n, _ in self.LISTS.values())} from {self.SOURCE_URL} "
                                f"into {self.root / self.LIST_FOLDER}/ (or use --imagenet_r_split random)")
        super().prepare()

    def make_splits(self):
        splits, wnids = {}, {}
        for split, (name, md5) in self.LISTS.items():
            path = self.root / self.LIST_FOLDER / name
            check_local(path, f"md5:{md5}", self.verify_data)
            paths, labels, wnids[split] = files_by_wnid(self.read_list(path), self.folder, path)
            splits[split] = (paths, labels)
        if wnids["train"] != wnids["test"]:
            raise UserError(f"ImageNet-R split '{self.NAME}': the train and test lists in "
                            f"{self.root / self.LIST_FOLDER} do not label the same classes the same way")
        return splits, wnids["train"]


class ImageNetRClap4clip(_ListedImageNetR):
    NAME = "imagenet_r_clap4clip"
    LIST_FOLDER = "imagenet_split"
    LISTS = {"train": ("imagenetr_train.txt", "956e4eebd0563f4b9986d6f95100b1c8"),
             "test": ("imagenetr_test.txt", "562bd5fa5b564a6a8b5224bf46dd5287")}
    SOURCE_URL = "https://github.com/srvCodes/clap4clip/tree/main/imagenet_split"

    def read_list(self, path):
        return read_file_list(path)


class ImageNetRMammoth(_ListedImageNetR):
    NAME = "imagenet_r_mammoth"
    LIST_FOLDER = "imagenet_r_utils"
    LISTS = {"train": ("imagenet-r_train.yaml", "b90d9c763369c87dbd9becb80abd83b3"),
             "test": ("imagenet-r_test.yaml", "3ea5a3aa2e96578874254d4ee87321b3")}
    SOURCE_URL = "https://github.com/aimagelab/mammoth/tree/master/datasets/imagenet_r_utils"

    def read_list(self, path):
        import yaml
        try:
            doc = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.YAMLError as exc:
            raise UserError(f"{path} is not valid YAML ({exc.__class__.__name__}); download it again") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("data"), list) or \
                not isinstance(doc.get("targets"), list) or len(doc["data"]) != len(doc["targets"]):
            raise UserError(f"{path}: expected 'data:' and 'targets:' lists of the same length (mammoth's format)")
        return [(str(p), int(t)) for p, t in zip(doc["data"], doc["targets"])]


class ImageNetRTest(ImageNetClassSubset, _ImageNetR):
    """All 30,000 ImageNet-R images as one test set, as WiSE-FT evaluates it (its ``ImageNetR``): labels in
    sorted-wnid order (WiSE-FT's ``CLASS_SUBLIST`` order) with CLIP's curated ImageNet names, as WiSE-FT and ZSCL
    prompt it; no training split."""

    NAME = "imagenet_r_test"
    SPLITS = ("test",)

    def make_splits(self):
        wnids, paths, labels = self.all_images()
        return {"test": (paths.tolist(), labels)}, wnids

    def native_class_names(self):
        return self.clip_class_names()

    def load_split(self, split):
        if split != "test":
            from datasets.utils.shift_sources import no_train_split
            raise no_train_split("ImageNet-R")
        return super().load_split(split)
