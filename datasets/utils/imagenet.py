"""What the ImageNet family (ImageNet, ImageNet-100, ImageNet-R, TinyImageNet) shares: readable names
of WordNet ids, CLIP's 80 ImageNet templates, the manual-download instructions and wnid file lists.

Class names: ``datasets/metadata/imagenet_classnames.txt`` holds CLIP's curated names of the 1000
ILSVRC2012 classes (also TinyImageNet's, as ZSCL names them); ``imagenet_r_classnames.txt`` the names
CLAP4CLIP and mammoth give ImageNet-R's 200 classes; ``tinyimagenet_wnids.txt`` the order of TinyImageNet's
``wnids.txt``. A user file ``<data_path>/imagenet_classnames.txt`` (``<wnid> <name>`` lines, the format of
``LOC_synset_mapping.txt`` and TinyImageNet's ``words.txt``) overrides or extends them.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from datasets.utils.download import Remote
from utils.errors import UserError

METADATA = Path(__file__).resolve().parent.parent / "metadata"
#: The user's own wnid -> name file, looked up in --data_path.
NAMES_OVERRIDE = "imagenet_classnames.txt"

#: CLIP's 80 prompt templates for ImageNet (Radford et al. 2021), as CLAP4CLIP and mammoth use them for
#: ImageNet-R and ImageNet-100.
IMAGENET_TEMPLATES = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.")

#: ILSVRC2012 is only available to registered users: never downloaded, only described.
IMAGENET = Remote("https://image-net.org/download-images.php", "ILSVRC2012_img_train.tar", None, kind="manual")
IMAGENET_HOW = (f"ImageNet cannot be downloaded automatically: register at {IMAGENET.url}, download "
                f"ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar and unpack both into <wnid> class folders "
                f"(e.g. with extract_ILSVRC.sh of github.com/pytorch/examples/tree/main/imagenet)")


def imagenet_folder(data_path: Path) -> Path:
    """``<data_path>/imagenet`` with ``train/<wnid>/`` and ``val/<wnid>/`` class folders, or the one-line error."""
    folder = data_path / "imagenet"
    for split in ("train", "val"):
        if not (folder / split).is_dir():
            raise UserError(f"ImageNet: '{folder / split}' is missing (expected {folder}/train/<wnid>/*.JPEG and "
                            f"{folder}/val/<wnid>/*.JPEG). {IMAGENET_HOW}; or point --data_path at a folder that "
                            f"contains imagenet/")
    return folder


def read_wnid_names(path: Path) -> dict[str, str]:
    """``wnid -> name`` from ``<wnid><whitespace><names>`` lines; the first comma-separated synonym is kept
    and underscores become spaces (``n01443537  goldfish, Carassius auratus`` -> ``goldfish``)."""
    names = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        wnid, _, rest = line.strip().partition("\t") if "\t" in line else line.strip().partition(" ")
        names[wnid.strip()] = rest.split(",")[0].strip().replace("_", " ")
    return names


@lru_cache(maxsize=None)
def clip_imagenet_names() -> dict[str, str]:
    """CLIP's readable names of the 1000 ILSVRC2012 wnids, in label order."""
    return read_wnid_names(METADATA / "imagenet_classnames.txt")


@lru_cache(maxsize=None)
def imagenet_r_names() -> dict[str, str]:
    """CLAP4CLIP's and mammoth's names of the 200 ImageNet-R classes (``wnid -> name``, sorted wnids)."""
    return read_wnid_names(METADATA / "imagenet_r_classnames.txt")


def imagenet_r_wnids() -> tuple[str, ...]:
    """The 200 ImageNet-R classes, sorted."""
    return tuple(imagenet_r_names())


@lru_cache(maxsize=None)
def tinyimagenet_wnids() -> tuple[str, ...]:
    """TinyImageNet's 200 wnids in the order of ``tiny-imagenet-200/wnids.txt``."""
    return tuple(read_wnid_names(METADATA / "tinyimagenet_wnids.txt"))


def wnid_names(wnids: Sequence[str], data_path: Path, names: dict[str, str] | None = None) -> list[str]:
    """Readable names of ``wnids``: ``<data_path>/imagenet_classnames.txt`` if it names them, else ``names``'s
    (a dataset's own list), else CLIP's."""
    table = {**clip_imagenet_names(), **(names or {})}
    override = data_path / NAMES_OVERRIDE
    if override.is_file():
        table.update(read_wnid_names(override))
    missing = [w for w in wnids if w not in table]
    if missing:
        raise UserError(f"no readable class name for {len(missing)} WordNet id(s) ({', '.join(missing[:3])}...): "
                        f"they are not ILSVRC2012 classes. Add '<wnid> <name>' lines for them to {override}")
    return [table[w] for w in wnids]


def files_by_wnid(entries: list[tuple[str, int]], base: Path, listing: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """Resolve a file list of ``(.../<wnid>/<file>, label)`` against ``base/<wnid>/<file>``.

    Only the last two path components are used, so lists written for other folder layouts
    (``train/<wnid>/...``, ``data/imagenet-r/<wnid>/...``) work. Returns the paths, the labels and the
    wnid of each label, after checking that labels are ``0..K-1``, one wnid each, and that every
    listed file exists (one directory listing per class, not one stat per file).
    """
    wnid_of: dict[int, str] = {}
    label_of: dict[str, int] = {}
    paths, labels = [], []
    for rel, label in entries:
        parts = rel.replace("\\", "/").split("/")
        if len(parts) < 2:
            raise UserError(f"{listing}: '{rel}' is not a '<class folder>/<file>' path")
        wnid, name = parts[-2], parts[-1]
        if wnid_of.setdefault(label, wnid) != wnid or label_of.setdefault(wnid, label) != label:
            raise UserError(f"{listing}: label {label} and class folder {wnid} are not one-to-one "
                            f"(also {wnid_of[label]} / label {label_of[wnid]})")
        paths.append((wnid, name))
        labels.append(label)
    if sorted(wnid_of) != list(range(len(wnid_of))):
        raise UserError(f"{listing}: labels must be 0..{len(wnid_of) - 1}, got {sorted(wnid_of)[:5]}...")
    present: dict[str, set[str]] = {}
    for wnid, name in paths:
        if wnid not in present:
            present[wnid] = set(os.listdir(base / wnid)) if (base / wnid).is_dir() else set()
        if name not in present[wnid]:
            raise UserError(f"{base / wnid / name}, listed in {listing}, is missing: {base} is incomplete or "
                            f"not the dataset this list was made for")
    return ([str(base / w / n) for w, n in paths], np.asarray(labels, dtype=np.int64),
            [wnid_of[k] for k in range(len(wnid_of))])


def ilsvrc_wnids() -> list[str]:
    """The 1000 ILSVRC2012 wnids in the standard (sorted) label order."""
    return list(clip_imagenet_names())


class ImageNetClassSubset:
    """A dataset whose classes (``self.wnids``, in label order) are some of ImageNet's 1000."""
    wnids: list[str]

    @property
    def imagenet_indices(self) -> list[int]:
        """Each class's position among ImageNet's 1000 (WiSE-FT's ``class_sublist``, in label order)."""
        position = {w: i for i, w in enumerate(ilsvrc_wnids())}
        return [position[w] for w in self.wnids]

    def imagenet_groups(self) -> list[list[int]]:
        return [[i] for i in self.imagenet_indices]
