"""DTD, the Describable Textures Dataset (47 classes, 5,640 images), stored as torchvision stores it:
``dtd/dtd/images/<class>/<file>.jpg`` and ``dtd/dtd/labels/{train,val,test}{1..10}.txt`` (lines
``<class>/<file>.jpg``), from ``dtd-r1.0.1.tar.gz``.

Splits are partition 1 exactly as torchvision's ``DTD(split=...)`` reads it, which is what ZSCL/MTIL
trains and tests on: ``train`` = ``train1.txt`` (1,880 images), ``test`` = ``test1.txt`` (1,880);
``val`` = ``val1.txt`` is there too (torchvision's ``train`` does not include it, so neither does MTIL's).
"""
from __future__ import annotations

import torch

from datasets.sources import RawDataset
from datasets.utils.download import Remote, extract
from datasets.utils.file_tree import check_images_exist, ensure_tree
from datasets.utils.folders import check_count
from datasets.utils.image_source import FileImages
from utils.errors import UserError

FOLDER = "dtd/dtd"
PARTITION = 1
IMAGES_PER_SPLIT = 1880
ARCHIVE = Remote("https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz", "dtd-r1.0.1.tar.gz",
                 "md5:fff73e5086ae6bdbea199a49dfb8a4c1")
#: ZSCL/MTIL's DTD templates.
TEMPLATES = tuple(f"a photo of {a} {{}} {kind}." for a in ("a", "the") for kind in ("texture", "pattern", "thing",
                                                                                  "object"))


class DTD(RawDataset):
    NAME = "dtd"
    TEMPLATES = TEMPLATES
    SPLITS = ("train", "val", "test")

    def prepare(self):
        self.folder = ensure_tree(self.root, "DTD", FOLDER,
                                  ["images", *(f"labels/{s}{PARTITION}.txt" for s in self.SPLITS)], ARCHIVE,
                                  self.download, self.verify_data, unpack=lambda a: extract(a, self.root / "dtd"))
        self.classes = sorted(p.name for p in (self.folder / "images").iterdir() if p.is_dir())
        if not self.classes:
            raise UserError(f"DTD: {self.folder / 'images'} has no class folders; delete it to extract it again")

    def native_class_names(self):
        return [c.replace("_", " ") for c in self.classes]

    def load_split(self, split):
        if split not in self.SPLITS:
            raise ValueError(f"dtd has no split '{split}' (splits: {', '.join(self.SPLITS)})")
        listing = self.folder / "labels" / f"{split}{PARTITION}.txt"
        lookup = {c: i for i, c in enumerate(self.classes)}
        paths, labels = [], []
        for line in listing.read_text().split():
            name = line.split("/")[0]
            if name not in lookup:
                raise UserError(f"DTD: {listing} lists '{line}', whose class has no folder in {self.folder / 'images'}")
            paths.append(self.folder / "images" / line)
            labels.append(lookup[name])
        check_count(f"DTD: images in {listing}", len(paths), IMAGES_PER_SPLIT, self.verify_data,
                    "it is not the original list")
        check_images_exist(paths, "DTD", listing)
        return FileImages(paths), torch.tensor(labels, dtype=torch.long)
