"""Tiny ADAM VTAB trees (``vtab/{train,test}/<class>/``), packable into the ``vtab.zip`` shape ADAM ships."""
from __future__ import annotations

from pathlib import Path

from fakes.image_tree import write_label_image

N_CLASSES = 50


def write_vtab(root: Path, per_split: int = 1, folder: str = "vtab") -> Path:
    """Class folders ``00``..``49`` (the real names do not matter: labels are sorted-folder indices)."""
    base = root / folder
    for split in ("train", "test"):
        for label in range(N_CLASSES):
            for i in range(per_split):
                write_label_image(base / split / f"{label:02d}" / f"{split}_{label}_{i}.jpg", label)
    return base
