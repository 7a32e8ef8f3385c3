"""Tiny Food-101: ``food-101/meta/{classes,labels,train,test}.txt`` and ``food-101/images/<class>/<id>.jpg``."""
from __future__ import annotations

from pathlib import Path

from fakes.image_tree import write_label_image

CLASSES = ["apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio", "beef_tartare", "beet_salad"]


def food101_classes(n_classes: int) -> list[str]:
    return (CLASSES + [f"dish_{i}" for i in range(len(CLASSES), n_classes)])[:n_classes]


def write_food101(root: Path, n_classes: int = 4, per_class: tuple[int, int] = (3, 2)) -> Path:
    """Returns the ``food-101`` folder; each image's colour encodes its class index in classes.txt."""
    folder = root / "food-101"
    meta = folder / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    classes = food101_classes(n_classes)
    (meta / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    (meta / "labels.txt").write_text("".join(f"{c.replace('_', ' ').capitalize()}\n" for c in classes))
    next_id = 100000
    for split, n in zip(("train", "test"), per_class):
        lines = []
        for label in range(n_classes):                   # the real lists are grouped by class
            for _ in range(n):
                entry = f"{classes[label]}/{next_id}"
                next_id += 1
                write_label_image(folder / "images" / f"{entry}.jpg", label)
                lines.append(f"{entry}\n")
        (meta / f"{split}.txt").write_text("".join(lines))
    return folder
