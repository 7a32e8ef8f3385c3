"""ObjectNet 1.0 (Barbu et al. 2019), the 113 classes that overlap ImageNet, as WiSE-FT evaluates it: test only.

ObjectNet's licence forbids redistribution and training on it, and its zip is password-protected behind a form, so
it is a manual download: agree to the licence at https://objectnet.dev/download.html, unzip ``objectnet-1.0.zip``
into ``<data_path>/`` (``objectnet-1.0/images/<folder>/*.png`` and ``objectnet-1.0/mappings/``). The mapping files
come with the zip (WiSE-FT ships copies in ``src/datasets/objectnet_metadata``):

- ``folder_to_objectnet_label.json``: image folder -> ObjectNet class name;
- ``objectnet_to_imagenet_1k.json``: ObjectNet class name -> its ImageNet classes, ``"; "``-separated (113 entries);
- ``imagenet_to_label_2012_v2``: line i = the names of ImageNet 2012 class id i;
- ``pytorch_to_imagenet_2012_id.json``: PyTorch (sorted-wnid) label -> ImageNet 2012 class id.

As WiSE-FT's ``ObjectNetBase``: the classes are the folders of the 113 mapped ObjectNet classes in sorted folder
order, named by their ObjectNet name in lower case; only their images are read; each class knows its ImageNet
labels (``imagenet_groups``, for WiSE-FT's max-over-classes projection of 1000-class logits); every image loses
its border: WiSE-FT crops 2 pixels on each side (``crop``: box (2, 2, w - 2, h - 2)), which removes ObjectNet's
1-pixel red frame.
"""
from __future__ import annotations

import torch
from PIL import Image

from datasets.sources import RawDataset
from datasets.utils.folders import check_count, class_folders, scan_class_folders
from datasets.utils.image_source import FileImages
from datasets.utils.imagenet import IMAGENET_TEMPLATES
from datasets.utils.shift_sources import no_train_split, read_json
from utils.errors import UserError

FOLDER = "objectnet-1.0"
MAPPINGS = ("folder_to_objectnet_label.json", "objectnet_to_imagenet_1k.json", "pytorch_to_imagenet_2012_id.json",
            "imagenet_to_label_2012_v2")
#: WiSE-FT's crop: this many pixels off each side
BORDER = 2
HOW = (f"ObjectNet cannot be downloaded automatically (its licence needs your agreement): get objectnet-1.0.zip at "
       f"https://objectnet.dev/download.html and unzip it (with the password given there) into <data_path>/, so "
       f"that <data_path>/{FOLDER}/images/ and <data_path>/{FOLDER}/mappings/ exist")


class CroppedImages(FileImages):
    """Image files read with ``border`` pixels cropped off each side."""

    def __init__(self, paths, border: int = BORDER):
        super().__init__(paths)
        self.border = int(border)

    def image(self, i: int) -> Image.Image:
        img = super().image(i)
        w, h = img.size
        b = self.border
        return img.crop((b, b, w - b, h - b)) if w > 2 * b and h > 2 * b else img


class ObjectNet(RawDataset):
    NAME = "objectnet"
    TEMPLATES = IMAGENET_TEMPLATES
    SPLITS = ("test",)
    N_CLASSES = 113
    N_IMAGES = 18_574

    def prepare(self):
        self.folder = self.root / FOLDER
        if not (self.folder / "images").is_dir():
            raise UserError(f"ObjectNet: '{self.folder / 'images'}' is missing. {HOW}")
        maps = self.folder / "mappings"
        what = "ObjectNet's mapping files"
        folder_to_label = read_json(maps / MAPPINGS[0], what, HOW)
        to_imagenet = read_json(maps / MAPPINGS[1], what, HOW)
        pytorch_to_2012 = read_json(maps / MAPPINGS[2], what, HOW)
        if not (maps / MAPPINGS[3]).is_file():
            raise UserError(f"{what}: '{maps / MAPPINGS[3]}' is missing. {HOW}")
        id_2012_to_pytorch = {int(v): int(k) for k, v in pytorch_to_2012.items()}
        name_to_pytorch = {}
        for i, line in enumerate((maps / MAPPINGS[3]).read_text(encoding="utf-8").splitlines()):
            if line.strip() and i in id_2012_to_pytorch:
                name_to_pytorch[line.strip()] = id_2012_to_pytorch[i]
        label_to_folder = {v: k for k, v in folder_to_label.items()}
        groups = {}
        for label, imagenet_names in to_imagenet.items():
            if label not in label_to_folder:
                raise UserError(f"ObjectNet: '{label}' of {maps / MAPPINGS[1]} has no folder in {maps / MAPPINGS[0]}")
            unknown = [n for n in imagenet_names.split("; ") if n not in name_to_pytorch]
            if unknown:
                raise UserError(f"ObjectNet: ImageNet class '{unknown[0]}' of {maps / MAPPINGS[1]} is not in "
                                f"{maps / MAPPINGS[3]}")
            groups[label_to_folder[label]] = [name_to_pytorch[n] for n in imagenet_names.split("; ")]
        self.class_dirs = sorted(groups)
        check_count(f"ObjectNet classes mapped to ImageNet in {maps / MAPPINGS[1]}", len(self.class_dirs),
                    self.N_CLASSES, self.verify_data, "is it ObjectNet 1.0's mapping file?")
        present = set(class_folders(self.folder / "images"))
        absent = [d for d in self.class_dirs if d not in present]
        if absent:
            raise UserError(f"ObjectNet: '{self.folder / 'images' / absent[0]}' is missing ({len(absent)} mapped class "
                            f"folders absent): the unzipped copy is incomplete. {HOW}")
        self.groups = [groups[d] for d in self.class_dirs]
        self.names = [folder_to_label[d].lower() for d in self.class_dirs]

    def imagenet_groups(self) -> list[list[int]]:
        """Each class's ImageNet labels (sorted-wnid order): WiSE-FT's ``rev_class_idx_map``."""
        return [list(g) for g in self.groups]

    def native_class_names(self):
        return self.names

    def load_split(self, split):
        if split != "test":
            raise no_train_split("ObjectNet")
        paths, labels = scan_class_folders(self.folder / "images", self.class_dirs)
        check_count(f"ObjectNet images of the {len(self.class_dirs)} mapped classes in {self.folder / 'images'}",
                    len(paths), self.N_IMAGES, self.verify_data, "is the unzipped copy complete?")
        return CroppedImages(paths), torch.tensor(labels, dtype=torch.long)
