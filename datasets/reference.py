"""Reference data for distillation methods (ZSCL and others): unlabelled ImageNet images and caption
sentences, sampled reproducibly from the user's local copies (neither is downloaded)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from datasets.utils.folders import class_folders, list_images
from datasets.utils.image_source import FileImages
from datasets.utils.imagenet import IMAGENET_HOW
from utils.errors import UserError

CAPTIONS_HOW = ("Download the Conceptual Captions TSV (e.g. Train_GCC-training.tsv: '<caption><TAB><url>' lines) from "
                "https://ai.google.com/research/ConceptualCaptions/download, or give any text file with one caption "
                "per line")


def imagenet_reference_images(root: str | Path, n: int, seed: int = 0) -> FileImages:
    """``n`` ImageNet training images drawn uniformly without replacement (seeded), from the ImageFolder
    ``<root>/imagenet/train/<wnid>/*`` (``root`` is --data_path; ``root`` may also be the ImageNet folder)."""
    root = Path(root)
    folder = root / "imagenet" / "train"
    if not folder.is_dir() and (root / "train").is_dir():
        folder = root / "train"
    if not folder.is_dir():
        raise UserError(f"ImageNet reference images: '{root / 'imagenet' / 'train'}' is missing (expected "
                        f"<wnid> class folders of ImageNet training images). {IMAGENET_HOW}")
    names = [(wnid, list_images(folder / wnid)) for wnid in class_folders(folder)]
    total = sum(len(files) for _, files in names)
    if total == 0:
        raise UserError(f"ImageNet reference images: no images under {folder}/<wnid>/. {IMAGENET_HOW}")
    if not 0 < n <= total:
        raise UserError(f"ImageNet reference images: asked for {n}, but {folder} has {total} images")
    starts = np.cumsum([0] + [len(files) for _, files in names])
    paths = []
    for i in np.random.default_rng(seed).choice(total, size=n, replace=False).tolist():
        c = int(np.searchsorted(starts, i, side="right") - 1)
        wnid, files = names[c]
        paths.append(str(folder / wnid / files[i - int(starts[c])]))
    return FileImages(paths)


def conceptual_captions(path: str | Path, n: int | None = None, seed: int = 0) -> list[str]:
    """Caption sentences from a local Conceptual Captions TSV (``caption<TAB>url`` lines) or a file of one
    caption per line: all of them in file order, or ``n`` drawn without replacement (seeded)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"reference captions: '{path}' is missing. {CAPTIONS_HOW}")
    captions = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            caption = line.split("\t", 1)[0].strip()
            if caption:
                captions.append(caption)
    if not captions:
        raise UserError(f"reference captions: '{path}' has no captions. {CAPTIONS_HOW}")
    if n is None:
        return captions
    if not 0 < n <= len(captions):
        raise UserError(f"reference captions: asked for {n}, but {path} has {len(captions)}")
    return [captions[i] for i in np.random.default_rng(seed).choice(len(captions), size=n, replace=False)]
