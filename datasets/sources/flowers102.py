"""Oxford Flowers-102 (102 classes, 8,189 images), stored as torchvision stores it:
``flowers-102/jpg/image_<00001>.jpg`` (from ``102flowers.tgz``), ``flowers-102/imagelabels.mat``
(``labels``: 1..102 per image id) and ``flowers-102/setid.mat`` (``trnid``/``valid``/``tstid``).

Splits are torchvision's, which ZSCL/MTIL uses: ``train`` = ``trnid`` (1,020 images, 10 per class),
``val`` = ``valid`` (1,020), ``test`` = ``tstid`` (6,149). Class names are the list CLIP and ZSCL/MTIL use
(``datasets/metadata/flowers102_classnames.txt``).
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from datasets.sources import RawDataset
from datasets.utils.download import Remote, extract
from datasets.utils.file_tree import check_images_exist, ensure_tree
from datasets.utils.folders import fetch_file
from datasets.utils.image_source import FileImages
from datasets.utils.matlab import mat_field
from utils.errors import UserError

FOLDER = "flowers-102"
URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
IMAGES = Remote(URL + "102flowers.tgz", "102flowers.tgz", "md5:52808999861908f626f3c1f4e79d11fa")
LABELS = Remote(URL + "imagelabels.mat", "imagelabels.mat", "md5:e0620be6f572b9609742df49c70aed4d")
SETID = Remote(URL + "setid.mat", "setid.mat", "md5:a5357ecc9cb78c4bef273ce3793fc85c")
SPLIT_KEYS = {"train": "trnid", "val": "valid", "test": "tstid"}
NAMES_FILE = Path(__file__).resolve().parent.parent / "metadata" / "flowers102_classnames.txt"
TEMPLATES = ("a photo of a {}, a type of flower.",)


def flower_names() -> list[str]:
    return [line for line in NAMES_FILE.read_text().splitlines() if line and not line.startswith("#")]


class Flowers102(RawDataset):
    NAME = "flowers102"
    TEMPLATES = TEMPLATES
    SPLITS = ("train", "val", "test")

    def prepare(self):
        base = self.root / FOLDER
        self.images = ensure_tree(self.root, "Flowers-102", f"{FOLDER}/jpg", ["image_00001.jpg"], IMAGES,
                                  self.download, self.verify_data, unpack=lambda archive: extract(archive, base))
        self.label_file, self.setid_file = (
            fetch_file(remote, base, self.download, self.verify_data,
                       f"Flowers-102: {base / remote.filename} is missing. Run without --download 0 to fetch "
                       f"{remote.url}, or point --data_path at a folder that contains {FOLDER}/{remote.filename}")
            for remote in (LABELS, SETID))

    @cached_property
    def _labels(self) -> np.ndarray:
        """Label 0..101 of image id ``i`` at position ``i - 1``."""
        labels = np.atleast_1d(mat_field(self.label_file, "labels", "Flowers-102")).astype(np.int64) - 1
        if labels.min() < 0 or labels.max() >= len(flower_names()):
            raise UserError(f"Flowers-102: {self.label_file} has labels outside 1..{len(flower_names())}")
        return labels

    def native_class_names(self):
        return flower_names()

    def load_split(self, split):
        if split not in SPLIT_KEYS:
            raise ValueError(f"flowers102 has no split '{split}' (splits: {', '.join(SPLIT_KEYS)})")
        ids = np.atleast_1d(mat_field(self.setid_file, SPLIT_KEYS[split], "Flowers-102")).astype(np.int64)
        if ids.min() < 1 or ids.max() > len(self._labels):
            raise UserError(f"Flowers-102: {self.setid_file} lists image ids missing from {self.label_file}")
        paths = [self.images / f"image_{i:05d}.jpg" for i in ids.tolist()]
        check_images_exist(paths, "Flowers-102", self.setid_file)
        return FileImages(paths), torch.from_numpy(self._labels[ids - 1])
