"""SUN397 scene categories (397 classes, listed in ``SUN397/ClassName.txt`` as ``/a/abbey``,
``/a/apartment_building/outdoor``, ...; images ``SUN397/<class path>/sun_*.jpg``).

There is no single official split: ``train``/``test`` are ZSCL/MTIL's seeded 80/20 split
(``torch.randperm`` with seed 42) over all images in a fixed order (ClassName.txt order, then file
name: ``image_order = "sorted"``), the same on every machine. ZSCL split torchvision's ``SUN397``, whose images
are in ``Path.rglob("sun_*.jpg")`` order: the file system's directory listing, so its split depends on the
machine. ``image_order = "listing"`` (MTIL's ``--sun397_split listing``) takes that order on this machine, as
ZSCL's pathlib walked it (Python <= 3.11: a directory's files in ``os.scandir`` order, then its subfolders
in that order, depth first), and labels each image by its class folder as torchvision does. Readable names: "abbey",
"apartment building outdoor" (CLIP style; ``class_paths`` keeps torchvision's "apartment_building/outdoor").
"""
from __future__ import annotations

import os
from functools import cached_property
from fnmatch import fnmatchcase

from datasets.sources import RawDataset
from datasets.utils.download import Remote
from datasets.utils.file_tree import ensure_tree, seeded_split_images
from datasets.utils.folders import check_count, list_images

FOLDER = "SUN397"
ARCHIVE = Remote("http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz", "SUN397.tar.gz",
                 "md5:8ca2778205c41d23104230ba66911c7a")
N_IMAGES = 108754
FIX = f"the copy is incomplete or not SUN397; delete {FOLDER}/ to extract or download it again"


class SUN397(RawDataset):
    NAME = "sun397"
    TEMPLATES = ("a photo of a {}.", "a photo of the {}.")
    #: "sorted" (ClassName.txt, then file names) or "listing" (ZSCL's: torchvision's rglob order)
    image_order = "sorted"

    def prepare(self):
        self.folder = ensure_tree(self.root, "SUN397", FOLDER, ["ClassName.txt"], ARCHIVE, self.download,
                                  self.verify_data)
        lines = (self.folder / "ClassName.txt").read_text().splitlines()
        #: folders below SUN397/: "a/abbey", "a/apartment_building/outdoor", ...
        self.class_dirs = [line.strip().strip("/") for line in lines if line.strip()]
        #: "abbey", "apartment_building/outdoor", ... (without the letter, as torchvision's ``classes``)
        self.class_paths = [d.split("/", 1)[1] for d in self.class_dirs]
        check_count(f"SUN397: classes in {self.folder / 'ClassName.txt'}", len(self.class_dirs), 397,
                    self.verify_data, FIX)

    def native_class_names(self):
        return [p.replace("_", " ").replace("/", " ") for p in self.class_paths]

    @cached_property
    def _items(self) -> tuple[list[str], list[int]]:
        if self.image_order == "listing":
            return self._listed_items()
        paths, labels = [], []
        for label, rel in enumerate(self.class_dirs):
            folder = self.folder / rel
            files = [f for f in list_images(folder) if f.startswith("sun_")] if folder.is_dir() else []
            paths += [str(folder / f) for f in files]
            labels += [label] * len(files)
        check_count(f"SUN397: images in {self.folder}", len(paths), N_IMAGES, self.verify_data, FIX)
        return paths, labels

    def _listed_items(self) -> tuple[list[str], list[int]]:
        """Images in torchvision's ``rglob`` order, labelled by their folder (files outside a class: skipped)."""
        label_of = {rel: i for i, rel in enumerate(self.class_dirs)}
        paths, labels = [], []

        def walk(folder: str, rel: str) -> None:
            with os.scandir(folder) as it:
                entries = list(it)
            for e in entries:
                if fnmatchcase(e.name, "sun_*.jpg") and not e.is_dir() and rel in label_of:
                    paths.append(e.path)
                    labels.append(label_of[rel])
            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    walk(e.path, f"{rel}/{e.name}" if rel else e.name)

        walk(str(self.folder), "")
        check_count(f"SUN397: images in {self.folder}", len(paths), N_IMAGES, self.verify_data, FIX)
        return paths, labels

    def load_split(self, split):
        return seeded_split_images(*self._items, split, "sun397")
