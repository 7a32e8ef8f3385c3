"""CUB-200-2011 (200 bird species, 11,788 images), from the official ``CUB_200_2011.tgz``:
``CUB_200_2011/images/<nnn.Class_Name>/<file>.jpg`` with ``images.txt`` (id, path),
``image_class_labels.txt`` (id, class 1..200), ``train_test_split.txt`` (id, 1 = train) and
``classes.txt`` (class id, ``nnn.Class_Name``).

Splits are the official ones (5,994 train / 5,794 test). Names are the folder names without their
number, underscores as spaces ("Black footed Albatross"), as CLAP4CLIP's ``labels.json`` has them.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path

import torch

from datasets.sources import RawDataset
from datasets.utils.download import Remote
from datasets.utils.file_tree import check_images_exist, ensure_tree
from datasets.utils.folders import check_count
from datasets.utils.image_source import FileImages
from utils.errors import UserError

FOLDER = "CUB_200_2011"
ARCHIVE = Remote("https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1", "CUB_200_2011.tgz",
                 "md5:97eceeb196236b17998738112f37df78")
N_IMAGES = {"train": 5994, "test": 5794}
INDEX_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
#: CLAP4CLIP's CUB template.
TEMPLATES = ("a photo of a {}, a type of bird.",)


class CUB200(RawDataset):
    NAME = "cub200"
    TEMPLATES = TEMPLATES

    def prepare(self):
        self.folder = ensure_tree(self.root, "CUB-200-2011", FOLDER, [*INDEX_FILES, "images"], ARCHIVE, self.download,
                                  self.verify_data)

    def _table(self, name: str) -> dict[int, str]:
        """``<id> <value>`` lines of an index file as {id: value}."""
        path = self.folder / name
        table = {}
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            key, _, value = line.strip().partition(" ")
            if not key.isdigit() or not value:
                raise UserError(f"CUB-200-2011: {path} has a malformed line: {line!r}")
            table[int(key)] = value.strip()
        return table

    @cached_property
    def _classes(self) -> list[str]:
        table = self._table("classes.txt")
        if sorted(table) != list(range(1, len(table) + 1)):
            raise UserError(f"CUB-200-2011: {self.folder / 'classes.txt'} does not number its classes 1..{len(table)}")
        return [table[i] for i in range(1, len(table) + 1)]

    def native_class_names(self):
        return [c.split(".", 1)[-1].replace("_", " ") for c in self._classes]

    @cached_property
    def _items(self) -> dict[str, tuple[list[Path], list[int]]]:
        images, labels, is_train = (self._table(f) for f in INDEX_FILES[:3])
        items = {"train": ([], []), "test": ([], [])}
        for image_id in sorted(images):
            if image_id not in labels or image_id not in is_train:
                raise UserError(f"CUB-200-2011: image {image_id} of images.txt has no label or split in {self.folder}")
            paths, targets = items["train" if is_train[image_id] == "1" else "test"]
            paths.append(self.folder / "images" / images[image_id])
            targets.append(int(labels[image_id]) - 1)
        return items

    def load_split(self, split):
        if split not in ("train", "test"):
            raise ValueError(f"cub200 has no split '{split}' (splits: train, test)")
        paths, labels = self._items[split]
        check_count(f"CUB-200-2011: {split} images in {self.folder / 'train_test_split.txt'}", len(paths),
                    N_IMAGES[split], self.verify_data, "it is not the original index")
        check_images_exist(paths, "CUB-200-2011", self.folder / "images.txt")
        return FileImages(paths), torch.tensor(labels, dtype=torch.long)
