"""CIFAR-10/100 in their native python-pickle format (the files torchvision downloads)."""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from datasets.utils.download import Remote, check_local, extract, fetch_remote
from utils.errors import UserError


@dataclass(frozen=True)
class CifarFormat:
    folder: str                                   # folder inside the archive
    archive: Remote
    train: tuple[tuple[str, str], ...]            # (file, md5)
    test: tuple[tuple[str, str], ...]
    meta: tuple[str, str]
    label_key: str                                # "labels" or "fine_labels"
    names_key: str                                # "label_names" or "fine_label_names"


CIFAR10 = CifarFormat(
    "cifar-10-batches-py",
    Remote("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-python.tar.gz",
           "md5:c58f30108f718f92721af3b95e74349a"),
    tuple((f"data_batch_{i}", md5) for i, md5 in enumerate(
        ["c99cafc152244af753f735de768cd75f", "d4bba439e000b95fd0a9bffe97cbabec", "54ebc095f3ab1f0389bbae665268c751",
         "634d18415352ddfa80567beed471001a", "482c414d41f54cd18b22e5b47cb7c3cb"], start=1)),
    (("test_batch", "40351d587109b95175f43aff81a1287e"),),
    ("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"), "labels", "label_names")

CIFAR100 = CifarFormat(
    "cifar-100-python",
    Remote("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "cifar-100-python.tar.gz",
           "md5:eb9058c3a382ffc7106e4002c42a8d85"),
    (("train", "16019d7e3df5f24257cddd939b257f8d"),),
    (("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
    ("meta", "7973b15100ade9c7d40fb424638fde48"), "fine_labels", "fine_label_names")


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as fh:
        return pickle.load(fh, encoding="latin1")


def ensure_cifar(fmt: CifarFormat, root: Path, download: bool, verify_data: bool) -> Path:
    """``root/<folder>`` with every file verified; downloads and extracts the archive if needed."""
    folder = root / fmt.folder
    if not folder.is_dir():
        if not download and not (root / fmt.archive.filename).is_file():
            raise UserError(f"{folder} is missing (CIFAR python-pickle layout: {fmt.folder}/"
                            f"{fmt.train[0][0]}, {fmt.test[0][0]}, {fmt.meta[0]}). Run without --download 0 to fetch "
                            f"{fmt.archive.url}, or point --data_path at a folder that contains {fmt.folder}/")
        extract(fetch_remote(fmt.archive, root, verify_data), root)
    for name, md5 in (*fmt.train, *fmt.test, fmt.meta):
        path = folder / name
        if not path.is_file():
            raise UserError(f"{path} is missing: {folder} is incomplete; delete it to download it again")
        check_local(path, f"md5:{md5}", verify_data)
    return folder


def load_cifar(fmt: CifarFormat, folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) uint8 and labels of a verified folder (see :func:`ensure_cifar`)."""
    data, labels = [], []
    for name, _ in (fmt.train if split == "train" else fmt.test):
        batch = _unpickle(folder / name)
        data.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(batch[fmt.label_key])
    return torch.from_numpy(np.concatenate(data)), torch.tensor(labels, dtype=torch.long)


def cifar_class_names(fmt: CifarFormat, folder: Path) -> list[str]:
    return [n.replace("_", " ") for n in _unpickle(folder / fmt.meta[0])[fmt.names_key]]
