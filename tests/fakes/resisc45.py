"""Tiny NWPU-RESISC45 ImageFolder tree (``NWPU-RESISC45/<class>/<class>_<nnn>.jpg``)."""
from __future__ import annotations

from pathlib import Path

from datasets.sources.resisc45 import FOLDERS  # the fake lays out the real class folders
from fakes.image_tree import write_label_image


def write_resisc45(root: Path, per_class: int = 3) -> Path:
    tree = root / "NWPU-RESISC45"
    for label, name in enumerate(FOLDERS):
        for i in range(1, per_class + 1):
            write_label_image(tree / name / f"{name}_{i:03d}.jpg", label)
    return tree
