"""Food-101 (101 dishes, 750 train / 250 test images each) with its official ``meta/train.txt`` and
``meta/test.txt``; class names from ``meta/classes.txt`` ("apple_pie" -> "apple pie")."""
from __future__ import annotations

import torch

from datasets.sources import RawDataset
from datasets.utils.download import Remote
from datasets.utils.file_tree import check_images_exist, ensure_tree
from datasets.utils.folders import check_count
from datasets.utils.image_source import FileImages
from utils.errors import UserError

FOLDER = "food-101"
ARCHIVE = Remote("http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz", "food-101.tar.gz",
                 "md5:85eeb15f3717b99a5da872d97d918f87")
N_IMAGES = {"train": 75750, "test": 25250}
FIX = f"the copy is incomplete or not Food-101; delete {FOLDER}/ to extract or download it again"


class Food101(RawDataset):
    NAME = "food101"
    TEMPLATES = ("a photo of a {}, a type of food.",)

    def prepare(self):
        required = ["meta/classes.txt", "meta/train.txt", "meta/test.txt", "images"]
        self.folder = ensure_tree(self.root, "Food-101", FOLDER, required, ARCHIVE, self.download,
                                  self.verify_data)
        self.classes = [c.strip() for c in (self.folder / "meta" / "classes.txt").read_text().splitlines()
                        if c.strip()]
        check_count(f"Food-101: classes in {self.folder / 'meta' / 'classes.txt'}", len(self.classes), 101,
                    self.verify_data, FIX)

    def native_class_names(self):
        return [c.replace("_", " ") for c in self.classes]

    def load_split(self, split):
        if split not in self.SPLITS:
            raise ValueError(f"food101 has no split '{split}' (splits: train, test)")
        index = self.folder / "meta" / f"{split}.txt"
        lookup = {c: i for i, c in enumerate(self.classes)}
        paths, labels = [], []
        for line in index.read_text().splitlines():
            entry = line.strip()                          # "apple_pie/1005649"
            if not entry:
                continue
            category = entry.split("/", 1)[0]
            if category not in lookup:
                raise UserError(f"Food-101: '{entry}' in {index} is of class '{category}', which is not in "
                                f"{self.folder / 'meta' / 'classes.txt'}")
            paths.append(self.folder / "images" / f"{entry}.jpg")
            labels.append(lookup[category])
        check_count(f"Food-101: images in {index}", len(paths), N_IMAGES[split], self.verify_data, FIX)
        check_images_exist(paths, "Food-101", index)
        return FileImages(paths), torch.tensor(labels, dtype=torch.long)
