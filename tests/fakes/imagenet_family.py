"""Tiny ImageNet-family datasets in their native layouts: TinyImageNet's unpacked zip, ImageNet's
ImageFolder, ImageNet-R's class folders, and the split lists of PODNet/CLAP4CLIP and mammoth.

Every image is a tiny PNG (whatever its extension: PIL reads by content) whose first pixel encodes a
class code: red + 256 * green. TinyImageNet codes are positions in its ``wnids.txt`` (:data:`TINY_WNIDS`,
the native labels); ImageNet and
ImageNet-R codes are positions among the 1000 ILSVRC2012 classes (:data:`IMAGENET_WNIDS`).
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from datasets.utils.imagenet import clip_imagenet_names, imagenet_r_wnids, tinyimagenet_wnids

IMAGENET_WNIDS = list(clip_imagenet_names())
IMAGENET_R_WNIDS = list(imagenet_r_wnids())
TINY_WNIDS = list(tinyimagenet_wnids())          # the real 200, in the zip's wnids.txt order


def image_bytes(code: int, size: int = 8) -> bytes:
    pixels = np.full((size, size, 3), 128, dtype=np.uint8)
    pixels[0, 0] = (code % 256, code // 256, 0)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def write_image(path: Path, code: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(code))


def decode(image: Image.Image) -> int:
    r, g, _ = image.convert("RGB").getpixel((0, 0))
    return r + 256 * g


# ---- TinyImageNet ------------------------------------------------------------------------------
def tiny_name(i: int) -> str:
    return f"tiny class {i:03d}"


def write_tinyimagenet(root: Path, per_class_train: int = 1, per_class_val: int = 1) -> Path:
    """``root/tiny-imagenet-200``: wnids.txt (the zip's order, unsorted), words.txt (fake names
    :func:`tiny_name`), train/, val/."""
    folder = root / "tiny-imagenet-200"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("".join(w + "\n" for w in TINY_WNIDS))
    words = [f"{w}\t{tiny_name(i).replace(' ', '_')}, some synonym\n" for i, w in enumerate(TINY_WNIDS)]
    (folder / "words.txt").write_text("n00001740\tentity\n" + "".join(words))
    annotations = []
    for label, wnid in enumerate(TINY_WNIDS):
        for k in range(per_class_train):
            write_image(folder / "train" / wnid / "images" / f"{wnid}_{k}.JPEG", label)
        for k in range(per_class_val):
            name = f"val_{label * per_class_val + k}.JPEG"
            write_image(folder / "val" / "images" / name, label)
            annotations.append(f"{name}\t{wnid}\t0\t0\t8\t8\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(annotations))
    return folder


def zip_folder(folder: Path, archive: Path, skip=lambda rel: False) -> Path:
    """Zip ``folder`` as its archive would hold it (paths start with the folder's name), leaving out the
    files whose relative path ``skip`` accepts."""
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder.parent).as_posix()
            if path.is_file() and not skip(rel):
                zf.write(path, rel)
    return archive


# ---- ImageNet and ImageNet-100 -----------------------------------------------------------------
def write_imagenet(root: Path, wnids: list[str], per_class_train: int = 2, per_class_val: int = 1) -> Path:
    """``root/imagenet/{train,val}/<wnid>/*.JPEG`` for the given ILSVRC2012 wnids."""
    folder = root / "imagenet"
    for wnid in wnids:
        code = IMAGENET_WNIDS.index(wnid)
        for k in range(per_class_train):
            write_image(folder / "train" / wnid / f"{wnid}_{k}.JPEG", code)
        for k in range(per_class_val):
            write_image(folder / "val" / wnid / f"ILSVRC2012_val_{code:05d}{k}.JPEG", code)
    return folder


def write_imagenet100_lists(root: Path, imagenet: Path, wnids_by_label: list[str]) -> Path:
    """``root/imagenet_split/{train,val}_100.txt``: PODNet's ``train/<wnid>/<file> <label>`` lines."""
    folder = root / "imagenet_split"
    folder.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train_100.txt"), ("val", "val_100.txt")):
        lines = [f"{split}/{wnid}/{f.name} {label}\n" for label, wnid in enumerate(wnids_by_label)
                 for f in sorted((imagenet / split / wnid).iterdir())]
        (folder / name).write_text("".join(lines))
    return folder


# ---- ImageNet-R --------------------------------------------------------------------------------
def write_imagenet_r(root: Path, per_class: int = 2) -> Path:
    """``root/imagenet-r/<wnid>/<rendition>_<k>.jpg`` for the 200 ImageNet-R classes, and its README.txt."""
    folder = root / "imagenet-r"
    for wnid in IMAGENET_R_WNIDS:
        for k in range(per_class):
            write_image(folder / wnid / f"{('art', 'sketch', 'toy')[k % 3]}_{k}.jpg", IMAGENET_WNIDS.index(wnid))
    (folder / "README.txt").write_text("ImageNet-R (fake)\n")
    return folder


def write_clap4clip_lists(root: Path, imagenet_r: Path) -> Path:
    """``root/imagenet_split/imagenetr_{train,test}.txt``: the first file of each class is train, the rest test;
    labels in sorted-wnid order, paths ``<split>/<wnid>/<file>`` as CLAP4CLIP writes them."""
    folder = root / "imagenet_split"
    folder.mkdir(parents=True, exist_ok=True)
    lines = {"train": [], "test": []}
    for label, wnid in enumerate(IMAGENET_R_WNIDS):
        for k, f in enumerate(sorted((imagenet_r / wnid).iterdir())):
            split = "train" if k == 0 else "test"
            lines[split].append(f"{split}/{wnid}/{f.name} {label}\n")
    for split, text in lines.items():
        (folder / f"imagenetr_{split}.txt").write_text("".join(text))
    return folder


def mammoth_order() -> list[str]:
    """A class order that is not the sorted one, as mammoth's lists have (label i -> this wnid)."""
    return IMAGENET_R_WNIDS[1::2] + IMAGENET_R_WNIDS[0::2]


def write_mammoth_lists(root: Path, imagenet_r: Path) -> Path:
    """``root/imagenet_r_utils/imagenet-r_{train,test}.yaml`` in mammoth's format: ``data:`` paths
    ``data/imagenet-r/<wnid>/<file>`` and ``targets:`` labels in :func:`mammoth_order`."""
    folder = root / "imagenet_r_utils"
    folder.mkdir(parents=True, exist_ok=True)
    items = {"train": [], "test": []}
    for label, wnid in enumerate(mammoth_order()):
        for k, f in enumerate(sorted((imagenet_r / wnid).iterdir())):
            items["test" if k == 0 else "train"].append((f"data/imagenet-r/{wnid}/{f.name}", label))
    for split, pairs in items.items():
        text = "data:\n" + "".join(f"- {p}\n" for p, _ in pairs) + "targets:\n" + "".join(f"- {t}\n" for _, t in pairs)
        (folder / f"imagenet-r_{split}.yaml").write_text(text)
    return folder
