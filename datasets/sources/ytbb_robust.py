"""YTBB-Robust (Shankar et al. 2021): frames of YouTube-BoundingBoxes videos, 24 classes, test only, from the
authors' ``imagenet_vid_ytbb_robust.tar.gz`` (``imagenet_vid_ytbb_robust/ytbb-robust/ytbb_videos/<video>_<ms>/
frame-<i>.jpg``) plus the annotation files WiSE-FT and ZSCL ship with their code, not with the archive
(``src/datasets/ytbb-robust_metadata/`` of github.com/mlfoundations/wise-ft: ``anchor_labels.json``,
``pmk_labels.json``, ``ytbb_class_index.json``, ``ytbb_robustness_test_anchors_full.csv``), put in
``<data_path>/ytbb-robust_metadata/`` (Tusk does not ship them).

As WiSE-FT's ``YTBBRobust``:
- anchors: the frames of ``anchor_labels.json`` marked ``good`` and neither ``bad`` nor ``unsure``, less those any
  pm-k review marks ``bad-anchor``; an anchor's labels are its annotated class names (those of the YTBB index) and
  its row of the CSV (whose labels 22 and 23 are swapped, as WiSE-FT does);
- pm-10 frames: the frames 1..10 before or after an anchor whose review (``pmk_labels.json``, key
  ``anchor,frame``) is ``similar`` and has none of the problematic labels;
- the test items are the anchors and their pm-10 frames; each frame's top-1 label is the smallest of its anchor's
  labels (WiSE-FT takes one of the set, for display only); ``pm0`` / ``pm10`` count a prediction correct when it is
  any of the anchor's labels;
- the ``none`` class (22) is never predicted: its logit is lowered by 1e10 (WiSE-FT's ``project_logits``).
"""
from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import torch

from datasets.sources import RawDataset
from datasets.sources.imagenet_vid_robust import ARCHIVE, TOP
from datasets.utils.folders import ensure_extracted
from datasets.utils.image_source import FileImages
from datasets.utils.imagenet import IMAGENET_TEMPLATES
from datasets.utils.shift_sources import frame_key, no_train_split, pmk_scores, read_json
from utils.errors import UserError

FOLDER = "ytbb-robust/ytbb_videos"
METADATA = "ytbb-robust_metadata"
HOW = (f"Run without --download 0 to fetch {ARCHIVE.url} (or unpack it into <data_path>/), and copy the folder "
       f"src/datasets/{METADATA} of https://github.com/mlfoundations/wise-ft into <data_path>/{METADATA}/")
K = 10
NONE_CLASS = 22
PROBLEMATIC = ("dissimilar", "problematic", "incorrect", "dont know", "deformation", "background-change",
               "occlusion-increased", "blur-increase", "bad-anchor")


def _annotations(path: Path) -> tuple[dict[str, set[str]], list[str]]:
    """``{key: set of label names}`` of an annotation file (a key annotated twice keeps its last row)."""
    doc = read_json(path, "YTBB-Robust", HOW)
    names = list(doc["labels"])
    return {row["key"]: {names[i] for i in row["labels"]} for row in doc["annotations"]}, names


def _parse(key: str) -> tuple[str, int]:
    """``<video>_<ms>/frame-<i>.jpg`` -> (``<video>_<ms>``, i)."""
    parent, name = frame_key(key).split("/")
    return parent, int(name.split("-")[1].split(".")[0])


class YTBBRobust(RawDataset):
    NAME = "ytbb_robust"
    TEMPLATES = IMAGENET_TEMPLATES
    SPLITS = ("test",)

    def prepare(self):
        top = ensure_extracted(ARCHIVE, self.root, TOP, self.download, self.verify_data,
                               f"YTBB-Robust: '{self.root / TOP}' is missing. {HOW}")
        videos = top / FOLDER
        if not videos.is_dir():
            raise UserError(f"YTBB-Robust: '{videos}' is missing. {HOW}")
        meta = self.root / METADATA
        index = read_json(meta / "ytbb_class_index.json", "YTBB-Robust", HOW)
        self.names = [index[str(i)] for i in range(len(index))]
        class_of = {name: i for i, name in enumerate(self.names)}
        anchors_raw, _ = _annotations(meta / "anchor_labels.json")
        reviews_raw, _ = _annotations(meta / "pmk_labels.json")
        csv_path = meta / "ytbb_robustness_test_anchors_full.csv"
        if not csv_path.is_file():
            raise UserError(f"YTBB-Robust: '{csv_path}' is missing. {HOW}")
        initial = {}
        with open(csv_path, newline="") as fh:
            for row in csv.DictReader(fh):
                label = int(row["label"])
                initial[f"{row['ytid']}_{row['time_ms']}"] = {23: 22, 22: 23}.get(label, label)
        bad_anchors = {frame_key(k.split(",")[0]) for k, labels in reviews_raw.items() if "bad-anchor" in labels}
        valid_pairs = defaultdict(set)
        for k, labels in reviews_raw.items():
            if "similar" in labels and not labels & set(PROBLEMATIC):
                anchor, frame = (frame_key(p) for p in k.split(","))
                valid_pairs[anchor].add(frame)
        self.anchor_labels: dict[str, set[int]] = {}
        self.pm_frames: dict[str, list[str]] = {}
        for key, labels in anchors_raw.items():
            key = frame_key(key)
            if "good" not in labels or labels & {"bad", "unsure"} or key in bad_anchors:
                continue
            parent, idx = _parse(key)
            if parent not in initial:
                raise UserError(f"YTBB-Robust: anchor {key} has no row in {csv_path}. {HOW}")
            self.anchor_labels[key] = {class_of[n] for n in labels if n in class_of} | {initial[parent]}
            self.pm_frames[key] = [f"{parent}/frame-{idx + i}.jpg" for i in range(-K, K + 1)
                                   if i and f"{parent}/frame-{idx + i}.jpg" in valid_pairs[key]]
        self.keys, self.frame_labels = [], []
        for anchor in sorted(self.anchor_labels):
            for key in (anchor, *self.pm_frames[anchor]):
                self.keys.append(key)
                self.frame_labels.append(min(self.anchor_labels[anchor]))
        self.anchor_of = {k: a for a in self.anchor_labels for k in (a, *self.pm_frames[a])}
        self.paths = [str(videos / k) for k in self.keys]
        absent = [p for p in self.paths if not Path(p).is_file()]
        if absent:
            raise UserError(f"YTBB-Robust: frame '{absent[0]}' is missing ({len(absent)} of {len(self.paths)} "
                            f"annotated frames): the unpacked archive is incomplete. {HOW}")

    def native_class_names(self):
        return self.names

    def load_split(self, split):
        if split != "test":
            raise no_train_split("YTBB-Robust")
        return FileImages(self.paths), torch.tensor(self.frame_labels, dtype=torch.long)

    def project_logits(self, logits):
        logits = logits.clone()
        logits[:, NONE_CLASS] -= 1.0e10
        return logits

    def eval_metrics(self, predictions):
        correct = {k: int(p) in self.anchor_labels[self.anchor_of[k]] for k, p in zip(self.keys, predictions)}
        return pmk_scores(correct, self.pm_frames)
