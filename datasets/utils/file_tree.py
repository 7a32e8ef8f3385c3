"""What the raw datasets kept as an extracted tree of image files with index files share (FGVC-Aircraft,
Caltech-101, Food-101, SUN397, DTD, EuroSAT, Oxford-IIIT Pet): the extracted tree with its index files
present, images listed by an index that must exist, and ZSCL's seeded train/test split for datasets
without an official one.

An extracted tree has no per-file checksums: the archive is verified when it is downloaded or extracted,
and the tree by its image counts (``folders.check_count``, relaxed by ``--verify_data 0``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import torch

from datasets.utils.download import Remote, extract, fetch_remote
from datasets.utils.image_source import FileImages
from utils.errors import UserError


def ensure_tree(root: Path, dataset: str, folder: str, required: Sequence[str], archive: Remote, download: bool,
                verify_data: bool, unpack: Callable[[Path], None] | None = None) -> Path:
    """``root/folder`` once each of ``required`` (paths inside it) exists.

    Otherwise ``root/archive.filename`` is verified (downloaded first when missing and ``download``) and
    unpacked into ``root`` (or by ``unpack``); with neither the tree nor the archive there and
    ``download`` off, a one-line ``UserError`` names the expected layout and where to get the data.
    """
    base = root / folder
    missing = [r for r in required if not (base / r).exists()]
    if not missing:
        return base
    archive_path = root / archive.filename
    if not archive_path.is_file() and (not download or archive.kind == "manual"):
        fetch = (f"Run without --download 0 to fetch {archive.url}" if archive.kind != "manual"
                 else f"Download it by hand: {archive.url}")
        raise UserError(f"{dataset}: {base / missing[0]} is missing (expected {base}/ with "
                        f"{', '.join(required)}). {fetch}, put {archive.filename} in {root}/, or point "
                        f"--data_path at a folder that contains {folder}/")
    fetch_remote(archive, root, verify_data)
    (unpack or (lambda path: extract(path, root)))(archive_path)
    for r in required:
        if not (base / r).exists():
            raise UserError(f"{dataset}: {archive_path} does not contain {folder}/{r}; it is not the expected "
                            f"archive ({archive.url}): delete it and download it again")
    return base


def check_images_exist(paths: Sequence[Path], dataset: str, listed_in: Path) -> None:
    """One-line error when images that an index file lists are not on disk (a partial copy)."""
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise UserError(f"{dataset}: {len(missing)} of the {len(paths)} images listed in {listed_in} are missing, "
                        f"e.g. {missing[0]}: the copy is incomplete; delete it to extract or download it again")


def seeded_split(n: int, ratio: float = 0.8, seed: int = 42) -> tuple[list[int], list[int]]:
    """``(train, test)`` indices: ``torch.utils.data.random_split(range(n), [int(ratio*n), rest])`` with
    ``torch.Generator().manual_seed(seed)``, i.e. the split ZSCL/MTIL take for Caltech-101, EuroSAT, SUN397."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_train = int(ratio * n)
    return order[:n_train], order[n_train:]


def seeded_split_images(paths: Sequence[str | Path], labels: Sequence[int], split: str, dataset: str,
                        ratio: float = 0.8, seed: int = 42) -> tuple[FileImages, torch.Tensor]:
    """The ``split`` ('train' or 'test') part of :func:`seeded_split` over a whole set of image files."""
    if split not in ("train", "test"):
        raise ValueError(f"{dataset} has no split '{split}' (splits: train, test)")
    train, test = seeded_split(len(paths), ratio, seed)
    idx = train if split == "train" else test
    return FileImages([paths[i] for i in idx]), torch.tensor([labels[i] for i in idx], dtype=torch.long)
