"""Caltech-101 (101 object classes; ``BACKGROUND_Google`` is not a class, as in torchvision and CoOp).

There is no official split: ``train``/``test`` are ZSCL/MTIL's seeded 80/20 split of the whole set in
torchvision's order (classes sorted, then ``image_0001.jpg``, ...), so the split is the one ZSCL used.
Class names are CLIP's readable ones ("off-center face", "centered face", ...), from
``datasets/metadata/caltech101_classnames.txt``.

Layout: torchvision's ``caltech101/101_ObjectCategories/<class>/image_0001.jpg``, made as torchvision does
from the official ``caltech-101.zip`` (the zip, then the ``101_ObjectCategories.tar.gz`` inside it).
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path

from datasets.sources import RawDataset
from datasets.utils.download import Remote, extract
from datasets.utils.file_tree import ensure_tree, seeded_split_images
from datasets.utils.folders import check_count, class_folders, list_images
from utils.errors import UserError

FOLDER = "caltech101"                                 # torchvision's root/caltech101/101_ObjectCategories
OBJECTS = "101_ObjectCategories"
INNER = f"caltech-101/{OBJECTS}.tar.gz"               # inside caltech-101.zip
BACKGROUND = "BACKGROUND_Google"
N_IMAGES = 8677
ARCHIVE = Remote("https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip", "caltech-101.zip",
                 "md5:3138e1922a9193bfa496528edbbc45d0")
NAMES_FILE = Path(__file__).resolve().parent.parent / "metadata" / "caltech101_classnames.txt"

#: ImageNet-style templates CLIP and ZSCL/MTIL use for Caltech-101.
TEMPLATES = tuple(p.replace("{a}", a) for a in ("a", "the") for p in (
    "a photo of {a} {}.", "a painting of {a} {}.", "{a} plastic {}.", "a sculpture of {a} {}.", "a sketch of {a} {}.",
    "a tattoo of {a} {}.", "{a} toy {}.", "a rendition of {a} {}.", "{a} embroidered {}.", "{a} cartoon {}.",
    "{a} {} in a video game.", "{a} plushie {}.", "{a} origami {}.", "art of {a} {}.", "graffiti of {a} {}.",
    "a drawing of {a} {}.", "a doodle of {a} {}."))


def readable_names() -> dict[str, str]:
    """Folder -> CLIP's readable name, in native (sorted folder) order."""
    pairs = (line.split("\t") for line in NAMES_FILE.read_text().splitlines() if line and not line.startswith("#"))
    return {folder: name for folder, name in pairs}


class Caltech101(RawDataset):
    NAME = "caltech101"
    TEMPLATES = TEMPLATES

    def prepare(self):
        self.folder = ensure_tree(self.root, "Caltech-101", FOLDER, [OBJECTS], ARCHIVE, self.download,
                                  self.verify_data, unpack=self._unpack) / OBJECTS
        self.categories = [c for c in class_folders(self.folder) if c != BACKGROUND]
        check_count(f"Caltech-101: class folders in {self.folder}", len(self.categories), 101, self.verify_data,
                    f"delete {self.folder} to extract or download it again")

    def _unpack(self, archive: Path) -> None:
        """As torchvision: the zip into ``caltech101/``, then the object-categories tarball it holds."""
        dest = self.root / FOLDER
        extract(archive, dest)
        inner = dest / INNER
        if not inner.is_file():
            raise UserError(f"Caltech-101: {archive} does not contain {INNER}; it is not the expected archive "
                            f"({ARCHIVE.url}): delete it and download it again")
        extract(inner, dest)

    def native_class_names(self):
        names = readable_names()
        return [names.get(c, c.replace("_", " ")) for c in self.categories]

    @cached_property
    def _items(self) -> tuple[list[str], list[int]]:
        paths, labels = [], []
        for label, category in enumerate(self.categories):
            files = [f for f in list_images(self.folder / category) if f.startswith("image_")]
            paths += [str(self.folder / category / f) for f in files]
            labels += [label] * len(files)
        check_count(f"Caltech-101: images in {self.folder}", len(paths), N_IMAGES, self.verify_data,
                    f"delete {self.folder} to extract or download it again")
        return paths, labels

    def load_split(self, split):
        return seeded_split_images(*self._items, split, "caltech101")
