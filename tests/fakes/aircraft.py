"""Tiny FGVC-Aircraft 2013b: ``fgvc-aircraft-2013b/data/{variants.txt, images_variant_<split>.txt, images/}``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fakes.image_tree import write_label_image

# real variant names, with the spaces and slashes the parser must keep
VARIANTS = ["707-320", "A300B4", "F-16A/B", "Falcon 2000", "Cessna 172", "DC-10", "Global Express", "Tu-154"]


def aircraft_variants(n_classes: int) -> list[str]:
    return (VARIANTS + [f"Variant {i}" for i in range(len(VARIANTS), n_classes)])[:n_classes]


def write_aircraft(root: Path, n_classes: int = 4, per_class: dict | None = None, seed: int = 0) -> Path:
    """Returns the ``data`` folder; each image's colour encodes its variant's index in variants.txt."""
    per_class = per_class or {"train": 2, "val": 1, "test": 1}
    rng = np.random.default_rng(seed)
    data = root / "fgvc-aircraft-2013b" / "data"
    variants = aircraft_variants(n_classes)
    data.mkdir(parents=True, exist_ok=True)
    (data / "variants.txt").write_text("".join(f"{v}\n" for v in variants))
    next_id = 1000000
    lines = {}
    for split, n in per_class.items():
        lines[split] = []
        for label in rng.permutation(np.repeat(np.arange(n_classes), n)).tolist():
            write_label_image(data / "images" / f"{next_id}.jpg", label)
            lines[split].append(f"{next_id} {variants[label]}\n")
            next_id += 1
        (data / f"images_variant_{split}.txt").write_text("".join(lines[split]))
    (data / "images_variant_trainval.txt").write_text("".join(lines.get("train", []) + lines.get("val", [])))
    return data
