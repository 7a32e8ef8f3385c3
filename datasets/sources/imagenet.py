"""ImageNet (ILSVRC2012) from the user's ImageFolder copy, and ImageNet-100 chosen by its class split files.

Both read ``<data_path>/imagenet/{train,val}/<wnid>/*.JPEG`` (the val images sorted into class
folders); ImageNet cannot be downloaded automatically. ``val`` is the test split.
"""
from __future__ import annotations

import torch

from datasets.sources import RawDataset
from datasets.utils.folders import check_count, class_folders, read_file_list, scan_class_folders
from datasets.utils.image_source import FileImages
from datasets.utils.imagenet import IMAGENET_TEMPLATES, files_by_wnid, imagenet_folder, wnid_names
from utils.errors import UserError

FOLDERS = {"train": "train", "test": "val"}


class ImageNet(RawDataset):
    """All classes found in ``train/`` (the 1000 of ILSVRC2012), in sorted-wnid (standard label) order."""

    NAME = "imagenet"
    TEMPLATES = IMAGENET_TEMPLATES
    SIZES = {"train": 1_281_167, "test": 50_000}

    def prepare(self):
        self.folder = imagenet_folder(self.root)
        self.wnids = class_folders(self.folder / "train")
        if class_folders(self.folder / "val") != self.wnids:
            raise UserError(f"ImageNet: {self.folder / 'val'} must have the same <wnid> class folders as "
                            f"{self.folder / 'train'} (sort the validation images into class folders, e.g. with "
                            f"valprep.sh of pytorch/examples/imagenet)")
        check_count(f"ImageNet class folders in {self.folder / 'train'}", len(self.wnids), 1000, self.verify_data,
                    "is the copy complete?")

    def native_class_names(self):
        return wnid_names(self.wnids, self.root)

    def load_split(self, split):
        folder = self.folder / FOLDERS[split]
        paths, labels = scan_class_folders(folder, self.wnids)
        check_count(f"ImageNet images in {folder}", len(paths), self.SIZES[split], self.verify_data,
                    "is the copy complete?")
        return FileImages(paths), torch.tensor(labels, dtype=torch.long)


class ImageNet100(RawDataset):
    """The ImageNet-100 of PODNet, CLAP4CLIP and ZSCL: the files and labels of ``train_100.txt`` /
    ``val_100.txt`` (``train/<wnid>/<file> <label>`` lines). Their labels are the native order."""

    NAME = "imagenet100"
    TEMPLATES = IMAGENET_TEMPLATES
    LISTS = {"train": "train_100.txt", "test": "val_100.txt"}
    #: Where the lists are looked for under --data_path (CLAP4CLIP's folder name, then next to ImageNet).
    LIST_FOLDERS = ("imagenet_split", "imagenet")
    N_CLASSES = 100

    def prepare(self):
        self.folder = imagenet_folder(self.root)
        folder = next((self.root / d for d in self.LIST_FOLDERS
                       if all((self.root / d / name).is_file() for name in self.LISTS.values())), None)
        if folder is None:
            raise UserError(f"ImageNet-100: the class split files are missing: expected "
                            f"{self.root / self.LIST_FOLDERS[0]}/{{{','.join(self.LISTS.values())}}} ('<path> <label>' "
                            f"lines; Tusk does not ship them). Download them from https://github.com/arthurdouillard/"
                            f"incremental_learning.pytorch/tree/master/imagenet_split")
        self.splits = {}
        wnids = {}
        for split, name in self.LISTS.items():
            listing = folder / name
            paths, labels, wnids[split] = files_by_wnid(read_file_list(listing), self.folder / FOLDERS[split], listing)
            self.splits[split] = (paths, labels)
        if wnids["train"] != wnids["test"] or len(wnids["train"]) != self.N_CLASSES:
            raise UserError(f"ImageNet-100: {folder / self.LISTS['train']} and {folder / self.LISTS['test']} must "
                            f"give the same {self.N_CLASSES} classes the same labels (got {len(wnids['train'])} and "
                            f"{len(wnids['test'])} classes)")
        self.wnids = wnids["train"]

    def native_class_names(self):
        return wnid_names(self.wnids, self.root)

    def load_split(self, split):
        paths, labels = self.splits[split]
        return FileImages(paths), torch.from_numpy(labels)
