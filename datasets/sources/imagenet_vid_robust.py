"""ImageNet-Vid-Robust (Shankar et al. 2021): frames of ImageNet-VID validation videos, 30 classes, test only, from
the authors' ``imagenet_vid_ytbb_robust.tar.gz`` (no published checksum) unpacked into ``<data_path>/``:
``imagenet_vid_ytbb_robust/imagenet-vid-robust/`` with ``val/<snippet>/<frame>``, ``metadata/labels.json``
(frame -> its labels), ``metadata/pmsets.json`` (anchor frame -> its reviewed neighbouring frames) and ``misc/``
(``imagenet_vid_class_index.json``: the 30 classes; ``rev_wnid_map.json`` and ``imagenet_class_index.json``: each
class's ImageNet classes). As WiSE-FT's ``ImageNetVidRobust``: every labelled frame is a test item with its first
label (top-1), class names are the VID index's; ``pm0`` / ``pm10`` (``eval_metrics``) count an anchor correct when
the prediction is any of its labels, and for pm-10 only if all its pm-set frames are too.
"""
from __future__ import annotations

import torch

from datasets.sources import RawDataset
from datasets.utils.download import Remote
from datasets.utils.folders import IMAGE_EXTENSIONS, ensure_extracted
from datasets.utils.image_source import FileImages
from datasets.utils.imagenet import IMAGENET_TEMPLATES
from datasets.utils.shift_sources import frame_key, no_train_split, pmk_scores, read_json
from utils.errors import UserError

ARCHIVE = Remote("https://do-imagenet-classifiers-generalize-across-time.s3-us-west-2.amazonaws.com/"
                 "imagenet_vid_ytbb_robust.tar.gz", "imagenet_vid_ytbb_robust.tar.gz", None)
TOP = "imagenet_vid_ytbb_robust"
FOLDER = "imagenet-vid-robust"
HOW = (f"Run without --download 0 to fetch {ARCHIVE.url} (the authors' archive, also holding YTBB-Robust), or "
       f"unpack it into <data_path>/ so that <data_path>/{TOP}/{FOLDER}/ exists")


class ImageNetVidRobust(RawDataset):
    NAME = "imagenet_vid_robust"
    TEMPLATES = IMAGENET_TEMPLATES
    SPLITS = ("test",)
    N_CLASSES = 30

    def prepare(self):
        top = ensure_extracted(ARCHIVE, self.root, TOP, self.download, self.verify_data,
                               f"ImageNet-Vid-Robust: '{self.root / TOP}' is missing. {HOW}")
        self.folder = top / FOLDER
        what = "ImageNet-Vid-Robust"
        vid_index = read_json(self.folder / "misc" / "imagenet_vid_class_index.json", what, HOW)
        imagenet_index = read_json(self.folder / "misc" / "imagenet_class_index.json", what, HOW)
        rev_wnid_map = read_json(self.folder / "misc" / "rev_wnid_map.json", what, HOW)
        self.labels = read_json(self.folder / "metadata" / "labels.json", what, HOW)
        self.pmsets = read_json(self.folder / "metadata" / "pmsets.json", what, HOW)
        if len(vid_index) != self.N_CLASSES:
            raise UserError(f"{what}: {self.folder / 'misc' / 'imagenet_vid_class_index.json'} lists {len(vid_index)} "
                            f"classes, not {self.N_CLASSES}. {HOW}")
        self.names = [vid_index[str(i)][1] for i in range(self.N_CLASSES)]
        imagenet_of = {v[0]: int(k) for k, v in imagenet_index.items()}
        self.groups = [[imagenet_of[w] for w in rev_wnid_map[vid_index[str(i)][0]]] for i in range(self.N_CLASSES)]
        val = self.folder / "val"
        if not val.is_dir():
            raise UserError(f"{what}: '{val}' is missing. {HOW}")
        files = sorted(p for p in val.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        self.paths = [str(p) for p in files if frame_key(p, 3) in self.labels]
        self.keys = [frame_key(p, 3) for p in self.paths]
        if not self.paths:
            raise UserError(f"{what}: no frame under {val} is listed in metadata/labels.json. {HOW}")
        absent = [k for a, frames in self.pmsets.items() for k in (a, *frames) if k not in set(self.keys)]
        if absent:
            raise UserError(f"{what}: frame '{absent[0]}' of {self.folder / 'metadata' / 'pmsets.json'} is missing "
                            f"under {val} ({len(absent)} frames): the unpacked archive is incomplete. {HOW}")

    def imagenet_groups(self):
        return [list(g) for g in self.groups]

    def native_class_names(self):
        return self.names

    def load_split(self, split):
        if split != "test":
            raise no_train_split("ImageNet-Vid-Robust")
        return FileImages(self.paths), torch.tensor([int(self.labels[k][0]) for k in self.keys], dtype=torch.long)

    def eval_metrics(self, predictions):
        correct = {k: int(p) in self.labels[k] for k, p in zip(self.keys, predictions)}
        anchors = {a: list(frames) for a, frames in self.pmsets.items()}
        # WiSE-FT scores each pm-set frame against its own labels (label_map[elem]), the anchor against the anchor's
        return pmk_scores(correct, anchors)
