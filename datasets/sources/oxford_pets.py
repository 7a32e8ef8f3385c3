"""Oxford-IIIT Pet (37 cat and dog breeds, 7,349 images), stored as torchvision stores it:
``oxford-iiit-pet/images/<Breed>_<n>.jpg`` (from ``images.tar.gz``) and
``oxford-iiit-pet/annotations/{trainval,test}.txt`` (from ``annotations.tar.gz``; lines
``<image id> <class id 1..37> <species> <breed id>``).

Splits are the official ``trainval`` (3,680, as ``train``) and ``test`` (3,669), what ZSCL/MTIL uses.
Class names are torchvision's (and so MTIL's): the image-name prefix with each word title-cased
("Abyssinian", "American Pit Bull Terrier", ...), in class-id order.
"""
from __future__ import annotations

from functools import cached_property

import torch

from datasets.sources import RawDataset
from datasets.utils.download import Remote, extract
from datasets.utils.file_tree import check_images_exist, ensure_tree
from datasets.utils.folders import check_count
from datasets.utils.image_source import FileImages
from utils.errors import UserError

FOLDER = "oxford-iiit-pet"
IMAGES = Remote("https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz", "images.tar.gz",
                "md5:5c4f3ee8e5d25df40f4fd59a7f44e54c")
ANNOTATIONS = Remote("https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz", "annotations.tar.gz",
                     "md5:95a8c909bbe2e81eed6a22bccdf3f68f")
LISTS = {"train": "trainval.txt", "test": "test.txt"}
N_IMAGES = {"train": 3680, "test": 3669}
TEMPLATES = ("a photo of a {}, a type of pet.",)


class OxfordPets(RawDataset):
    NAME = "oxford_pets"
    TEMPLATES = TEMPLATES

    def prepare(self):
        self.annotations = ensure_tree(self.root, "Oxford-IIIT Pet", f"{FOLDER}/annotations", list(LISTS.values()),
                                       ANNOTATIONS, self.download, self.verify_data, unpack=self._unpack)
        first = self._lists["train"][0][0]           # the images' tree is there once a listed image is
        self.images = ensure_tree(self.root, "Oxford-IIIT Pet", f"{FOLDER}/images", [f"{first}.jpg"], IMAGES,
                                  self.download, self.verify_data, unpack=self._unpack)

    def _unpack(self, archive):
        """Both archives hold a top folder (``images/``, ``annotations/``) that goes into ``oxford-iiit-pet/``."""
        extract(archive, self.root / FOLDER)

    @cached_property
    def _lists(self) -> dict[str, list[tuple[str, int]]]:
        """split -> [(image id, label 0..36)] from the annotation lists."""
        lists = {}
        for split, file in LISTS.items():
            rows = []
            for line in (self.annotations / file).read_text().splitlines():
                parts = line.split()
                if not parts or parts[0].startswith("#"):
                    continue
                if len(parts) < 2 or not parts[1].isdigit():
                    raise UserError(f"Oxford-IIIT Pet: {self.annotations / file} has a malformed line: {line!r}")
                rows.append((parts[0], int(parts[1]) - 1))
            if not rows:
                raise UserError(f"Oxford-IIIT Pet: {self.annotations / file} lists no images")
            lists[split] = rows
        return lists

    def native_class_names(self):
        breeds = {label: image_id.rsplit("_", 1)[0] for rows in self._lists.values() for image_id, label in rows}
        if sorted(breeds) != list(range(len(breeds))):
            raise UserError(f"Oxford-IIIT Pet: {self.annotations} does not list every class id 1..{len(breeds)}")
        return [" ".join(part.title() for part in breeds[i].split("_")) for i in range(len(breeds))]

    def load_split(self, split):
        if split not in LISTS:
            raise ValueError(f"oxford_pets has no split '{split}' (splits: train, test)")
        rows = self._lists[split]
        check_count(f"Oxford-IIIT Pet: images in {self.annotations / LISTS[split]}", len(rows), N_IMAGES[split],
                    self.verify_data, "it is not the original list")
        paths = [self.images / f"{image_id}.jpg" for image_id, _ in rows]
        check_images_exist(paths, "Oxford-IIIT Pet", self.annotations / LISTS[split])
        return FileImages(paths), torch.tensor([label for _, label in rows], dtype=torch.long)
