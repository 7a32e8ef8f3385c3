"""Tiny CUB-200-2011 in its archive's layout (``CUB_200_2011/images/...`` and the four index files)."""
from __future__ import annotations

from pathlib import Path

from fakes.image_tree import write_label_image

N_CLASSES = 200
FIRST_CLASSES = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross")


def class_folders() -> list[str]:
    return [*FIRST_CLASSES, *(f"{i:03d}.Bird_{i}" for i in range(len(FIRST_CLASSES) + 1, N_CLASSES + 1))]


def write_cub200(root: Path, per_split: int = 1) -> Path:
    """``per_split`` train and test images per class, listed in class-interleaved id order."""
    base = root / "CUB_200_2011"
    images, labels, split = [], [], []
    folders = class_folders()
    for s in (1, 0):                                   # 1 = train, 0 = test
        for label, folder in enumerate(folders):
            for i in range(per_split):
                rel = f"{folder}/{folder.split('.', 1)[1]}_{s}{i}.jpg"
                write_label_image(base / "images" / rel, label)
                images.append(rel)
                labels.append(label + 1)
                split.append(s)
    ids = range(1, len(images) + 1)
    (base / "images.txt").write_text("".join(f"{i} {p}\n" for i, p in zip(ids, images)))
    (base / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, c in zip(ids, labels)))
    (base / "train_test_split.txt").write_text("".join(f"{i} {s}\n" for i, s in zip(ids, split)))
    (base / "classes.txt").write_text("".join(f"{i} {f}\n" for i, f in enumerate(folders, start=1)))
    return base
