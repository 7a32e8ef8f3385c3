"""Helpers for fakes stored as trees of image files: tiny one-colour images whose colour encodes their
native label (so tests can check that names and labels line up after splitting and reordering), and
packing a fake tree into its dataset's archive."""
from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

from PIL import Image


def label_color(label: int) -> tuple[int, int, int]:
    return label % 256, label // 256, 77


def write_label_image(path: Path, label: int, size: int = 8) -> Path:
    """A ``size``x``size`` image of one colour that encodes ``label``. It is saved as PNG whatever the file
    name says (PIL reads by content), so the colour survives exactly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), label_color(label)).save(path, format="PNG")
    return path


def label_of(image: Image.Image) -> int:
    r, g, _ = image.convert("RGB").getpixel((0, 0))
    return r + 256 * g


def label_of_tensor(x) -> int:
    """Label of a float [0, 1] image tensor (C, H, W) made from a label image (resizing keeps the colour)."""
    r, g = (float(v) * 255 for v in x[:2, x.shape[1] // 2, x.shape[2] // 2])
    return round(r) + 256 * round(g)


def pack_tar(root: Path, folder: str, archive: str, remove: bool = True) -> Path:
    """``root/archive`` (.tar.gz) holding ``root/folder``; the folder is removed unless ``remove`` is off."""
    path = root / archive
    with tarfile.open(path, "w:gz") as tf:
        tf.add(root / folder, arcname=folder)
    if remove:
        shutil.rmtree(root / folder)
    return path
