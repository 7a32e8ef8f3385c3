"""Tiny EuroSAT in torchvision's layout (``eurosat/2750/<Class>/<Class>_<n>.jpg``) and its ``EuroSAT.zip``."""
from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from fakes.image_tree import write_label_image

FOLDERS = ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture", "PermanentCrop",
           "Residential", "River", "SeaLake")


def write_eurosat(root: Path, per_class: int = 5) -> Path:
    """``root/eurosat/2750``; each image's colour encodes its native label (the sorted folder index)."""
    tree = root / "eurosat" / "2750"
    for label, name in enumerate(FOLDERS):
        for i in range(1, per_class + 1):
            write_label_image(tree / name / f"{name}_{i}.jpg", label)
    return tree


def pack_eurosat(root: Path) -> Path:
    """``root/EuroSAT.zip`` holding ``2750/`` as the real zip does; the extracted tree is removed."""
    tree = root / "eurosat" / "2750"
    archive = root / "EuroSAT.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(tree.rglob("*")):
            zf.write(path, path.relative_to(tree.parent).as_posix())
    shutil.rmtree(root / "eurosat")
    return archive
