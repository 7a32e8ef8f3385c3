"""Tiny SUN397: ``SUN397/ClassName.txt`` (``/a/abbey``, nested ``/a/apartment_building/outdoor``, ...)
and ``SUN397/<letter>/<class>/sun_<id>.jpg``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fakes.image_tree import write_label_image

CLASS_LINES = ["/a/abbey", "/a/airplane_cabin", "/a/apartment_building/outdoor", "/b/balcony/exterior",
               "/b/balcony/interior", "/b/bakery/shop"]


def sun397_class_lines(n_classes: int) -> list[str]:
    return (CLASS_LINES + [f"/z/zone_{i}" for i in range(len(CLASS_LINES), n_classes)])[:n_classes]


def write_sun397(root: Path, n_classes: int = 4, per_class: int = 5, seed: int = 0) -> Path:
    """Returns the ``SUN397`` folder; class ``i`` has ``per_class + i % 3`` images whose colour encodes ``i``."""
    rng = np.random.default_rng(seed)
    folder = root / "SUN397"
    folder.mkdir(parents=True, exist_ok=True)
    lines = sun397_class_lines(n_classes)
    (folder / "ClassName.txt").write_text("".join(f"{line}\n" for line in lines))
    for label, line in enumerate(lines):
        for _ in range(per_class + label % 3):
            name = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 16))
            write_label_image(folder / line.strip("/") / f"sun_{name}.jpg", label)
    return folder
