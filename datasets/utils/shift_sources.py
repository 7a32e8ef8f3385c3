"""What the evaluation-only sources of ImageNet's distribution shifts share (ImageNet-A, -R, -Sketch, -V2,
ObjectNet, YTBB-Robust, ImageNet-Vid-Robust): class folders under one top folder, a test split only, the
positions of their classes among ImageNet's 1000 (WiSE-FT's ``class_sublist``), and the one-line errors.

WiSE-FT (``src/datasets/``) evaluates these sets on a model fine-tuned on ImageNet: the 1000-class head's
logits are masked to a set's classes (``project_logits``: A and R keep 200) or max-pooled over the ImageNet
classes each of the set's classes maps to (ObjectNet, YTBB, Vid-Robust). ZSCL's framework, which Tusk follows
for ``--eval_datasets``, instead builds each set's zero-shot classifier from its own class names and templates
(``mtil/src/models/evaluation.py``); for A and R the two agree exactly, because a template classifier's logit of a
class depends on that class's prompts only (``tests/test_shift_datasets.py`` checks it). :func:`project_imagenet_logits`
is WiSE-FT's projection, for scores over the 1000 ImageNet classes.
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np
import torch
from torch import Tensor

from datasets.sources import RawDataset
from datasets.utils.download import Remote
from datasets.utils.folders import check_count, class_folders, ensure_extracted, scan_class_folders
from datasets.utils.image_source import FileImages, ImageSource
from datasets.utils.imagenet import IMAGENET_TEMPLATES, ImageNetClassSubset, ilsvrc_wnids, wnid_names
from utils.errors import UserError


def no_train_split(name: str) -> UserError:
    return UserError(f"{name} has a test set only (it is an evaluation set of ImageNet's distribution shifts): use "
                     f"it in --eval_datasets, or train on imagenet")


def project_imagenet_logits(logits: Tensor, groups: Sequence[Sequence[int]]) -> Tensor:
    """WiSE-FT's ``project_logits`` for scores over ImageNet's 1000 classes: class ``k`` of the set gets the max of
    the logits of its ImageNet classes ``groups[k]`` (one class each: the mask of ImageNet-A/R)."""
    if logits.shape[1] == len(groups):
        return logits
    return torch.stack([logits[:, list(g)].amax(1) for g in groups], dim=1)


class ImageNetFolders(ImageNetClassSubset, RawDataset):
    """``<root>/<FOLDER>/<class folder>/<image>``, from ``REMOTE`` (extracted) or put there by hand; the class
    folders are wnids (or, with ``FOLDERS_ARE_LABELS``, ImageNet label numbers ``0``..``999``)."""

    TEMPLATES = IMAGENET_TEMPLATES
    SPLITS = ("test",)
    FOLDER: ClassVar[str] = ""
    REMOTE: ClassVar[Remote | None] = None
    TITLE: ClassVar[str] = ""
    N_CLASSES: ClassVar[int] = 1000
    N_IMAGES: ClassVar[int] = 0
    FOLDERS_ARE_LABELS: ClassVar[bool] = False
    HOW: ClassVar[str] = ""

    def prepare(self):
        missing = (f"{self.TITLE}: '{self.root / self.FOLDER}' is missing (expected {self.FOLDER}/<class folder>/"
                   f"<image>, {self.N_CLASSES} class folders). {self.HOW}")
        if self.REMOTE is None:
            if not (self.root / self.FOLDER).is_dir():
                raise UserError(missing)
            self.folder = self.root / self.FOLDER
        else:
            self.folder = ensure_extracted(self.REMOTE, self.root, self.FOLDER, self.download, self.verify_data,
                                           missing)
        self.class_dirs = class_folders(self.folder)
        fix = f"delete {self.folder} to extract it again"
        check_count(f"{self.TITLE} class folders in {self.folder}", len(self.class_dirs), self.N_CLASSES,
                    self.verify_data, fix)
        if self.FOLDERS_ARE_LABELS:
            bad = [d for d in self.class_dirs if not d.isdigit() or not 0 <= int(d) < 1000]
            if bad:
                raise UserError(f"{self.TITLE}: {self.folder / bad[0]} is not an ImageNet label folder (0..999)")
            self.class_dirs = sorted(self.class_dirs, key=int)
            every = ilsvrc_wnids()
            self.wnids = [every[int(d)] for d in self.class_dirs]
        else:
            self.wnids = list(self.class_dirs)
        self.names = wnid_names(self.wnids, self.root)          # one-line error for a wnid outside ILSVRC2012

    def native_class_names(self):
        return self.names

    def load_split(self, split):
        if split != "test":
            raise no_train_split(self.TITLE)
        paths, labels = scan_class_folders(self.folder, self.class_dirs)
        check_count(f"{self.TITLE} images in {self.folder}", len(paths), self.N_IMAGES, self.verify_data,
                    f"delete {self.folder} to extract it again")
        return FileImages(paths), torch.tensor(labels, dtype=torch.long)


def read_json(path: Path, what: str, how: str):
    import json
    if not path.is_file():
        raise UserError(f"{what}: '{path}' is missing. {how}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{what}: {path} is not valid JSON ({type(exc).__name__}); {how}") from None


def as_int_array(values) -> np.ndarray:
    return np.asarray(list(values), dtype=np.int64)


def pmk_scores(correct: dict[str, bool], anchors: dict[str, list[str]]) -> dict[str, float]:
    """The video sets' metrics (Shankar et al. 2021, as WiSE-FT reports them), percent over the anchors:
    ``pm0`` = accuracy on the anchor frames; ``pm10`` = the anchor and every one of its (reviewed) neighbouring
    frames within 10 frames are all correct, the worst case over each anchor's set. ``correct[key]``: whether the
    prediction of frame ``key`` is one of its anchor's labels."""
    n = max(len(anchors), 1)
    pm0 = sum(correct[a] for a in anchors)
    pmk = sum(correct[a] and all(correct[f] for f in frames) for a, frames in anchors.items())
    return {"pm0": 100.0 * pm0 / n, "pm10": 100.0 * pmk / n, "n_anchors": len(anchors)}


def frame_key(path: str | Path, parts: int = 2) -> str:
    """The last ``parts`` components of a frame's path, ``/``-joined (how the video sets' metadata name frames)."""
    return "/".join(Path(path).parts[-parts:])


# ---- WILDS (FMoW, iWildCam): through the wilds package, an optional dependency -------------------------------
WILDS_HOW = "pip install wilds (an optional dependency of Tusk: WiSE-FT's and ZSCL's loaders use it)"


def import_wilds(title: str):
    try:
        import wilds
    except ImportError:
        raise UserError(f"{title} is read through the optional 'wilds' package, which is not installed: "
                        f"{WILDS_HOW}") from None
    return wilds


class WildsSource(RawDataset):
    """A WILDS dataset through ``wilds.get_dataset(dataset=WILDS_NAME, root_dir=<data_path>, download=...)``: its
    official ``train`` split and its out-of-distribution ``test`` split (WiSE-FT's ``FMOWOOD`` / ``IWildCamOOD``);
    labels are the dataset's ``y_array``; ``eval_metrics`` is the dataset's own ``eval(y_pred, y_true, metadata)``
    on the test subset, of which ``METRICS`` (WILDS key -> Tusk's name) are kept, in percent."""

    WILDS_NAME: ClassVar[str] = ""
    TITLE: ClassVar[str] = ""
    TEST_SPLIT: ClassVar[str] = "test"
    METRICS: ClassVar[dict[str, str]] = {}

    def prepare(self):
        wilds = import_wilds(self.TITLE)
        try:
            self.wilds = wilds.get_dataset(dataset=self.WILDS_NAME, root_dir=str(self.root), download=self.download)
        except (FileNotFoundError, OSError, ValueError) as exc:
            raise UserError(f"{self.TITLE}: wilds could not open '{self.WILDS_NAME}' under {self.root} "
                            f"({type(exc).__name__}: {exc}); run without --download 0 to let wilds fetch it") from None
        self._subsets = {}

    def subset(self, split: str):
        if split not in self._subsets:
            self._subsets[split] = self.wilds.get_subset("train" if split == "train" else self.TEST_SPLIT)
        return self._subsets[split]

    def load_split(self, split):
        subset = self.subset(split)
        return WildsImages(subset), torch.as_tensor(subset.y_array).long()

    def load_split_labels(self, split):
        return torch.as_tensor(self.subset(split).y_array).long()

    def eval_metrics(self, predictions):
        subset = self.subset("test")
        y_true = torch.as_tensor(subset.y_array).long()
        results, _ = self.wilds.eval(torch.as_tensor(np.asarray(predictions), dtype=torch.long), y_true,
                                     subset.metadata_array)
        missing = [k for k in self.METRICS if k not in results]
        if missing:
            raise UserError(f"{self.TITLE}: this wilds version's eval() reports no '{missing[0]}' (it reports "
                            f"{', '.join(sorted(results))[:200]})")
        return {name: 100.0 * float(results[key]) for key, name in self.METRICS.items()}


class WildsImages(ImageSource):
    """A WILDS subset's images (its ``__getitem__``'s ``x``, untransformed) as RGB PIL images."""

    def __init__(self, subset):
        self.subset = subset

    def __len__(self) -> int:
        return len(self.subset)

    def image(self, i: int):
        x, _y, _metadata = self.subset[i]
        return x.convert("RGB")
