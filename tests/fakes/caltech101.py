"""Tiny Caltech-101: ``caltech101/101_ObjectCategories/<folder>/image_0001.jpg`` with the real folder names
(and ``BACKGROUND_Google``, which is not a class), or the ``caltech-101.zip`` that wraps it."""
from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path

from datasets.sources.caltech101 import readable_names
from fakes.image_tree import write_label_image

BACKGROUND_LABEL = 999


def caltech101_folders(n_classes: int) -> list[str]:
    return list(readable_names())[:n_classes]        # the file lists folders in native (sorted) order


def write_caltech101(root: Path, n_classes: int = 5, per_class: int = 5) -> Path:
    """Returns the ``101_ObjectCategories`` folder; class ``i`` has ``per_class + i % 2`` images whose
    colour encodes ``i``."""
    objects = root / "caltech101" / "101_ObjectCategories"
    for label, folder in enumerate(caltech101_folders(n_classes)):
        for k in range(1, per_class + label % 2 + 1):
            write_label_image(objects / folder / f"image_{k:04d}.jpg", label)
    for k in (1, 2):
        write_label_image(objects / "BACKGROUND_Google" / f"image_{k:04d}.jpg", BACKGROUND_LABEL)
    return objects


def pack_caltech101_zip(root: Path) -> Path:
    """Replace the tree by ``root/caltech-101.zip`` laid out like the official one (a zip of
    ``caltech-101/101_ObjectCategories.tar.gz`` and ``caltech-101/Annotations.tar``)."""
    inner = root / "101_ObjectCategories.tar.gz"
    with tarfile.open(inner, "w:gz") as tf:
        tf.add(root / "caltech101" / "101_ObjectCategories", arcname="101_ObjectCategories")
    archive = root / "caltech-101.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(inner, "caltech-101/101_ObjectCategories.tar.gz")
        zf.writestr("caltech-101/Annotations.tar", b"")
    inner.unlink()
    shutil.rmtree(root / "caltech101")
    return archive
