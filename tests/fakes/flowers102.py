"""Tiny Flowers-102 in torchvision's layout (``flowers-102/jpg/image_<id>.jpg``, ``imagelabels.mat``, ``setid.mat``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.io import savemat

from fakes.image_tree import write_label_image

N_CLASSES = 102


def write_flowers102(root: Path, per_split: tuple[int, int, int] = (1, 1, 2), seed: int = 0) -> Path:
    """Images with ids 1..N in a shuffled label order; ``per_split`` = images per class in trnid/valid/tstid."""
    base = root / "flowers-102"
    rng = np.random.default_rng(seed)
    per_class = sum(per_split)
    labels = rng.permutation(np.repeat(np.arange(N_CLASSES), per_class))      # label of image id i+1
    for image_id, label in enumerate(labels.tolist(), start=1):
        write_label_image(base / "jpg" / f"image_{image_id:05d}.jpg", label)
    ids = {"trnid": [], "valid": [], "tstid": []}
    for label in range(N_CLASSES):
        own = (np.flatnonzero(labels == label) + 1).tolist()
        start = 0
        for key, n in zip(ids, per_split):
            ids[key] += own[start:start + n]
            start += n
    savemat(base / "imagelabels.mat", {"labels": (labels + 1).reshape(1, -1).astype(np.uint8)})
    savemat(base / "setid.mat", {k: np.array(sorted(v), dtype=np.uint16).reshape(1, -1) for k, v in ids.items()})
    return base
