"""Tiny Stanford Cars in the layout torchvision reads (``stanford_cars/cars_{train,test}/``, ``devkit/*.mat``,
``cars_test_annos_withlabels.mat``), with the ``.mat`` files as MATLAB structs like the real ones."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.io import savemat

from fakes.image_tree import write_label_image

N_CLASSES = 196
FIRST_NAMES = ("AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012")


def class_names() -> list[str]:
    return [*FIRST_NAMES, *(f"Make{i} Model{i} Sedan 2012" for i in range(len(FIRST_NAMES) + 1, N_CLASSES + 1))]


def _annotations(rows: list[tuple[str, int]]) -> np.ndarray:
    fields = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
    out = np.zeros((1, len(rows)), dtype=fields)
    for j, (fname, cls) in enumerate(rows):
        out[0, j] = (1, 1, 8, 8, cls, fname)
    return out


def write_stanford_cars(root: Path, per_split: int = 1) -> Path:
    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array(class_names(), dtype=object).reshape(1, -1)})
    for split, annos in (("train", base / "devkit" / "cars_train_annos.mat"),
                         ("test", base / "cars_test_annos_withlabels.mat")):
        rows = []
        for label in range(N_CLASSES):
            for i in range(per_split):
                fname = f"{len(rows) + 1:05d}.jpg"
                write_label_image(base / f"cars_{split}" / fname, label)
                rows.append((fname, label + 1))
        savemat(annos, {"annotations": _annotations(rows)})
    return base
