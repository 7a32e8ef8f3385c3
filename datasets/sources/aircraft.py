"""FGVC-Aircraft 2013b at the variant level (100 classes), with the official train / val / trainval / test
lists (``images_variant_<split>.txt``) that torchvision's ``FGVCAircraft`` reads; MTIL trains on ``train``."""
from __future__ import annotations

import torch

from datasets.sources import RawDataset
from datasets.utils.download import Remote
from datasets.utils.file_tree import check_images_exist, ensure_tree
from datasets.utils.folders import check_count
from datasets.utils.image_source import FileImages
from utils.errors import UserError

FOLDER = "fgvc-aircraft-2013b"
# The archive torchvision downloads (torchvision lists no checksum; this SHA-256 of the 2,753,340,328-byte
# file is the one several public download scripts pin).
ARCHIVE = Remote("https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",
                 "fgvc-aircraft-2013b.tar.gz",
                 "sha256:e4e323d410e29f0370c81eabdcbb0e2b813acea1de22891b70b58ff41bfc9834")
N_IMAGES = {"train": 3334, "val": 3333, "trainval": 6667, "test": 3333}
FIX = f"the copy is incomplete or not FGVC-Aircraft 2013b; delete {FOLDER}/ to extract or download it again"


class Aircraft(RawDataset):
    NAME = "aircraft"
    SPLITS = ("train", "val", "trainval", "test")
    TEMPLATES = ("a photo of a {}, a type of aircraft.", "a photo of the {}, a type of aircraft.")

    def prepare(self):
        required = ["data/variants.txt", "data/images", *(f"data/images_variant_{s}.txt" for s in ("train", "test"))]
        self.folder = ensure_tree(self.root, "FGVC-Aircraft", FOLDER, required, ARCHIVE, self.download,
                                  self.verify_data) / "data"
        self.variants = [line.strip() for line in (self.folder / "variants.txt").read_text().splitlines()
                         if line.strip()]
        check_count(f"FGVC-Aircraft: variants in {self.folder / 'variants.txt'}", len(self.variants), 100,
                    self.verify_data, FIX)

    def native_class_names(self):
        return [v.replace("_", " ") for v in self.variants]

    def load_split(self, split):
        if split not in self.SPLITS:
            raise ValueError(f"aircraft has no split '{split}' (splits: {', '.join(self.SPLITS)})")
        index = self.folder / f"images_variant_{split}.txt"
        lookup = {v: i for i, v in enumerate(self.variants)}
        paths, labels = [], []
        for n, line in enumerate(index.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            image_id, _, variant = line.strip().partition(" ")     # variants contain spaces: "Falcon 2000"
            if variant not in lookup:
                raise UserError(f"FGVC-Aircraft: line {n} of {index} names variant '{variant}', which is not in "
                                f"{self.folder / 'variants.txt'}")
            paths.append(self.folder / "images" / f"{image_id}.jpg")
            labels.append(lookup[variant])
        check_count(f"FGVC-Aircraft: images in {index}", len(paths), N_IMAGES[split], self.verify_data, FIX)
        check_images_exist(paths, "FGVC-Aircraft", index)
        return FileImages(paths), torch.tensor(labels, dtype=torch.long)
