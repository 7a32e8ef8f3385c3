"""Tiny DTD in torchvision's layout (``dtd/dtd/images/<class>/...``, ``dtd/dtd/labels/{train,val,test}1.txt``)."""
from __future__ import annotations

from pathlib import Path

from fakes.image_tree import write_label_image

CLASSES = ("banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed", "cracked", "crosshatched",
           "crystalline", "dotted", "fibrous", "flecked", "freckled", "frilly", "gauzy", "grid", "grooved",
           "honeycombed", "interlaced", "knitted", "lacelike", "lined", "marbled", "matted", "meshed", "paisley",
           "perforated", "pitted", "pleated", "polka-dotted", "porous", "potholed", "scaly", "smeared", "spiralled",
           "sprinkled", "stained", "stratified", "striped", "studded", "swirly", "veined", "waffled", "woven",
           "wrinkled", "zigzagged")


def write_dtd(root: Path, per_split: int = 1) -> Path:
    """``per_split`` images per class in each of train1/val1/test1; colours encode the sorted class index."""
    base = root / "dtd" / "dtd"
    lines = {"train": [], "val": [], "test": []}
    for label, name in enumerate(CLASSES):
        for s, split in enumerate(lines):
            for i in range(per_split):
                rel = f"{name}/{name}_{s:02d}{i:02d}.jpg"
                write_label_image(base / "images" / rel, label)
                lines[split].append(rel)
    (base / "labels").mkdir(parents=True)
    for split, rows in lines.items():
        (base / "labels" / f"{split}1.txt").write_text("\n".join(rows) + "\n")
    return base
