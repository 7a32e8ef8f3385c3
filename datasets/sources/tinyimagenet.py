"""TinyImageNet (200 classes, 64x64) in the layout of ``tiny-imagenet-200.zip``:
``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG`` labelled by ``val/val_annotations.txt``,
``wnids.txt`` and ``words.txt``. The labelled ``val`` split is the test split (``test/`` has no labels).

Native label order (source ``tinyimagenet``): the order of ``wnids.txt``, as continuum's ``TinyImageNet200``
labels it and hence ZSCL's class-incremental code (whose ``class_orders/tinyimagenet.yaml`` indexes it). Names:
CLIP's curated ImageNet names, as ZSCL prompts with (its ``dataset_reqs/tinyimagenet_classes.txt``). With
``--verify_data`` the ``wnids.txt`` order is checked against the zip's (``datasets/metadata/tinyimagenet_wnids.txt``).
Source ``tinyimagenet_sorted``: sorted wnids (PyCIL's ImageFolder order) and the first synonym in ``words.txt``,
Tusk's earlier native order and names. Read from files: 100k decoded images would take 1.2 GB.
"""
from __future__ import annotations

import torch

from datasets.sources import RawDataset
from datasets.utils.download import Remote, require_files
from datasets.utils.folders import check_count, ensure_extracted, list_images
from datasets.utils.image_source import FileImages
from datasets.utils.imagenet import read_wnid_names, tinyimagenet_wnids, wnid_names
from utils.errors import UserError

TINYIMAGENET = Remote("http://cs231n.stanford.edu/tiny-imagenet-200.zip", "tiny-imagenet-200.zip",
                      "md5:90528d7ca1a48142e341f4ef8d21d0de")
FOLDER = "tiny-imagenet-200"
LAYOUT = ("wnids.txt", "words.txt", "train", "val/images", "val/val_annotations.txt")
SIZES = {"train": 100_000, "test": 10_000}


class TinyImageNet(RawDataset):
    NAME = "tinyimagenet"
    #: The prompt of Continual-CLIP and ZSCL's class-incremental TinyImageNet runs.
    TEMPLATES = ("a bad photo of a {}.",)

    def prepare(self):
        how = (f"Run without --download 0 to fetch {TINYIMAGENET.url}, or point --data_path at a folder that "
               f"contains {FOLDER}/")
        self.folder = ensure_extracted(TINYIMAGENET, self.root, FOLDER, self.download, self.verify_data,
                                       f"TinyImageNet: '{self.root / FOLDER}' is missing (the unpacked "
                                       f"{TINYIMAGENET.filename}: {FOLDER}/{{{', '.join(LAYOUT)}}}). {how}")
        require_files(self.folder, LAYOUT, "TinyImageNet", f"Delete {self.folder} to extract it again. {how}")
        self.wnids = self.native_order((self.folder / "wnids.txt").read_text().split())
        check_count(f"TinyImageNet classes in {self.folder / 'wnids.txt'}", len(self.wnids), 200, self.verify_data,
                    f"delete {self.folder} to extract it again")

    def native_order(self, listed: list[str]) -> list[str]:
        """The wnids by native label, from those of ``wnids.txt`` in file order."""
        if self.verify_data and len(listed) == 200 and listed != list(tinyimagenet_wnids()):
            raise UserError(f"TinyImageNet: {self.folder / 'wnids.txt'} does not list the 200 classes in the order of "
                            f"{TINYIMAGENET.filename}, which the native labels (and --class_order zscl) follow; delete "
                            f"{self.folder} to extract it again, or pass --verify_data 0 to use its order as it is")
        return listed

    def native_class_names(self):
        return wnid_names(self.wnids, self.root)

    def load_split(self, split):
        if split == "train":
            paths, labels = [], []
            for label, wnid in enumerate(self.wnids):
                folder = self.folder / "train" / wnid / "images"
                if not folder.is_dir():
                    raise UserError(f"TinyImageNet: '{folder}' is missing: delete {self.folder} to extract it again")
                files = list_images(folder)
                paths.extend(str(folder / f) for f in files)
                labels.extend([label] * len(files))
        else:
            index = {w: i for i, w in enumerate(self.wnids)}
            annotations = self.folder / "val" / "val_annotations.txt"
            present = set(list_images(self.folder / "val" / "images"))
            paths, labels = [], []
            for line in annotations.read_text().splitlines():
                fields = line.split("\t")
                if len(fields) < 2 or fields[1] not in index or fields[0] not in present:
                    raise UserError(f"{annotations}: '{line}' is not '<file>TAB<wnid>...' with a wnid of wnids.txt "
                                    f"and a file of val/images; delete {self.folder} to extract it again")
                paths.append(str(self.folder / "val" / "images" / fields[0]))
                labels.append(index[fields[1]])
        check_count(f"TinyImageNet {split} images in {self.folder}", len(paths), SIZES[split], self.verify_data,
                    f"delete {self.folder} to extract it again")
        return FileImages(paths), torch.tensor(labels, dtype=torch.long)


class TinyImageNetSorted(TinyImageNet):
    """Sorted wnids and ``words.txt`` names (``--tinyimagenet_native sorted``)."""

    NAME = "tinyimagenet_sorted"

    def native_order(self, listed):
        return sorted(listed)

    def native_class_names(self):
        words = read_wnid_names(self.folder / "words.txt")
        missing = [w for w in self.wnids if w not in words]
        if missing:
            raise UserError(f"{self.folder / 'words.txt'} has no name for {', '.join(missing[:3])}: "
                            f"delete {self.folder} to extract it again")
        return [words[w] for w in self.wnids]
