"""Stanford Cars (196 car models, 16,185 images) in the layout torchvision's ``StanfordCars`` reads:
``stanford_cars/cars_train/*.jpg``, ``stanford_cars/cars_test/*.jpg``, ``stanford_cars/devkit/cars_meta.mat``
(``class_names``), ``stanford_cars/devkit/cars_train_annos.mat`` and
``stanford_cars/cars_test_annos_withlabels.mat`` (``annotations``: records with ``fname`` and ``class`` 1..196).

The original download links are dead (pytorch/vision#7545), so the data must be put there by hand.
Splits are the official train (8,144) / test (8,041), what ZSCL/MTIL uses; names come from
``cars_meta.mat`` ("AM General Hummer SUV 2000", ...).
"""
from __future__ import annotations

from functools import cached_property

import numpy as np
import torch

from datasets.sources import RawDataset
from datasets.utils.download import Remote
from datasets.utils.file_tree import check_images_exist, ensure_tree
from datasets.utils.folders import check_count
from datasets.utils.image_source import FileImages
from datasets.utils.matlab import mat_field
from utils.errors import UserError

FOLDER = "stanford_cars"
META = "devkit/cars_meta.mat"
SPLITS = {"train": ("devkit/cars_train_annos.mat", "cars_train"),
          "test": ("cars_test_annos_withlabels.mat", "cars_test")}
N_IMAGES = {"train": 8144, "test": 8041}
REQUIRED = (META, *(f for pair in SPLITS.values() for f in pair))
#: Not downloadable: the Remote only says how to get the files.
MANUAL = Remote("the images from https://www.kaggle.com/datasets/jessicali9530/stanford-cars-dataset (move "
                "cars_train/cars_train and cars_test/cars_test up one level), devkit/ from "
                "https://github.com/pytorch/vision/files/11644847/car_devkit.tgz and cars_test_annos_withlabels.mat as "
                "described in https://github.com/pytorch/vision/issues/7545#issuecomment-1631441616",
                FOLDER, None, "manual")
#: ZSCL/MTIL's Stanford Cars templates.
TEMPLATES = ("a photo of a {}, a type of car.", "a photo of a {}.", "a photo of the {}.", "a photo of my {}.",
             "i love my {}!", "a photo of my dirty {}.", "a photo of my clean {}.", "a photo of my new {}.",
             "a photo of my old {}.")


class StanfordCars(RawDataset):
    NAME = "stanford_cars"
    TEMPLATES = TEMPLATES

    def prepare(self):
        self.folder = ensure_tree(self.root, "Stanford Cars", FOLDER, REQUIRED, MANUAL, self.download,
                                  self.verify_data)

    @cached_property
    def _names(self) -> list[str]:
        path = self.folder / META
        names = np.atleast_1d(mat_field(path, "class_names", "Stanford Cars"))
        return [str(n).strip().replace("_", " ") for n in names.tolist()]

    def native_class_names(self):
        return self._names

    def load_split(self, split):
        if split not in SPLITS:
            raise ValueError(f"stanford_cars has no split '{split}' (splits: train, test)")
        annos, images = SPLITS[split]
        path = self.folder / annos
        records = np.atleast_1d(mat_field(path, "annotations", "Stanford Cars"))
        try:
            rows = [(str(r["fname"]), int(r["class"]) - 1) for r in records]
        except (ValueError, IndexError, KeyError, TypeError):
            raise UserError(f"Stanford Cars: {path} has no 'fname'/'class' annotations (for {split}, use "
                            f"{annos}, the file with labels)") from None
        if any(not 0 <= label < len(self._names) for _, label in rows):
            raise UserError(f"Stanford Cars: {path} has classes outside 1..{len(self._names)}")
        check_count(f"Stanford Cars: {split} images in {path}", len(rows), N_IMAGES[split], self.verify_data,
                    "it is not the full annotation file")
        paths = [self.folder / images / fname for fname, _ in rows]
        check_images_exist(paths, "Stanford Cars", path)
        return FileImages(paths), torch.tensor([label for _, label in rows], dtype=torch.long)
