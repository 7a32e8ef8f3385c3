"""Tiny fakes of the distribution-shift sets in their native layouts (subsets: few classes and images, so they are
read with --verify_data 0): ImageNet-A, ImageNet-R, ImageNet-Sketch and ImageNet-V2 class folders, ObjectNet with
its mapping files and red-bordered images, ImageNet-Vid-Robust and YTBB-Robust frames with their metadata, and a
stand-in for the ``wilds`` package with the API of its datasets (``get_dataset``, ``get_subset``, ``y_array``,
``metadata_array``, ``__getitem__``, ``eval``). Images encode their ImageNet label as in ``imagenet_family``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fakes.imagenet_family import IMAGENET_R_WNIDS, IMAGENET_WNIDS, write_image, write_imagenet, write_imagenet_r

#: the ImageNet classes of the fakes (positions among the 1000); ImageNet-R's must be ImageNet-R classes
A_CLASSES = [6, 11, 13, 15]
CLASSES = [1, 6, 11, 13]


def write_imagenet_a(root: Path, per_class: int = 2) -> Path:
    folder = root / "imagenet-a"
    for c in A_CLASSES:
        for k in range(per_class):
            write_image(folder / IMAGENET_WNIDS[c] / f"{k}.jpg", c)
    return folder


def write_sketch(root: Path, per_class: int = 2) -> Path:
    for c in CLASSES:
        for k in range(per_class):
            write_image(root / "sketch" / IMAGENET_WNIDS[c] / f"sketch_{k}.JPEG", c)
    return root / "sketch"


def write_v2(root: Path, per_class: int = 2) -> Path:
    folder = root / "imagenetv2-matched-frequency-format-val"
    for c in CLASSES:
        for k in range(per_class):
            write_image(folder / str(c) / f"{k}.jpeg", c)
    return folder


#: ObjectNet: folder -> (ObjectNet label, its ImageNet classes); one maps to two ImageNet classes
OBJECTNET = {"alarm_clock": ("Alarm clock", [11, 13]), "banana": ("Banana", [6]), "chair": ("Chair", [1])}


def write_objectnet(root: Path, per_class: int = 2, border_color=(255, 0, 0)) -> Path:
    """``objectnet-1.0/images/<folder>/*.png`` with a 2-pixel red border around a 12 x 12 image whose inner
    pixel (2, 2) encodes the class's first ImageNet label; an unmapped folder; ``mappings/``."""
    folder = root / "objectnet-1.0"
    for name, (_, imagenet) in {**OBJECTNET, "unmapped_thing": ("Unmapped thing", [])}.items():
        code = imagenet[0] if imagenet else 999
        for k in range(per_class):
            pixels = np.full((12, 12, 3), 128, dtype=np.uint8)
            pixels[:2], pixels[-2:], pixels[:, :2], pixels[:, -2:] = border_color, border_color, border_color, \
                border_color
            pixels[2, 2] = (code % 256, code // 256, 0)
            path = folder / "images" / name / f"{k}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
    maps = folder / "mappings"
    maps.mkdir(parents=True, exist_ok=True)
    labels = {n: v[0] for n, v in OBJECTNET.items()} | {"unmapped_thing": "Unmapped thing"}
    (maps / "folder_to_objectnet_label.json").write_text(json.dumps(labels))
    names = [f"{IMAGENET_WNIDS[i]} name {i}, synonym" for i in range(1000)]       # imagenet_to_label_2012_v2 lines
    # ImageNet 2012 ids are a permutation of PyTorch's sorted-wnid labels: id = (label + 7) % 1000
    (maps / "pytorch_to_imagenet_2012_id.json").write_text(json.dumps({str(i): (i + 7) % 1000 for i in range(1000)}))
    lines = [""] * 1000
    for i in range(1000):
        lines[(i + 7) % 1000] = names[i]
    (maps / "imagenet_to_label_2012_v2").write_text("\n".join(lines) + "\n")
    (maps / "objectnet_to_imagenet_1k.json").write_text(json.dumps(
        {label: "; ".join(names[i] for i in imagenet) for label, imagenet in OBJECTNET.values()}))
    return folder


# ---- the video sets -------------------------------------------------------------------------------------------
VID_CLASSES = [("n02691156", "airplane", [404]), ("n02419796", "antelope", [1, 6]), ("n02131653", "bear", [11])]


def write_vid_robust(root: Path) -> tuple[Path, dict]:
    """Two anchors of 3 frames: ``val/<snippet>/<frame>.JPEG``; labels.json, pmsets.json, misc/. Returns the folder
    and the frame keys by snippet."""
    folder = root / "imagenet_vid_ytbb_robust" / "imagenet-vid-robust"
    misc = folder / "misc"
    misc.mkdir(parents=True, exist_ok=True)
    (misc / "imagenet_vid_class_index.json").write_text(json.dumps(
        {str(i): [w, n] for i, (w, n, _) in enumerate(VID_CLASSES)} |
        {str(i): [f"n9{i:07d}", f"vid class {i}"] for i in range(len(VID_CLASSES), 30)}))
    (misc / "imagenet_class_index.json").write_text(json.dumps({str(i): [w, f"name {i}"]
                                                                for i, w in enumerate(IMAGENET_WNIDS)}))
    rev = {w: [IMAGENET_WNIDS[i] for i in g] for w, _, g in VID_CLASSES}
    rev |= {f"n9{i:07d}": [IMAGENET_WNIDS[500 + i]] for i in range(len(VID_CLASSES), 30)}
    (misc / "rev_wnid_map.json").write_text(json.dumps(rev))
    labels, pmsets, keys = {}, {}, {}
    for s, (label, extra) in enumerate([(0, []), (2, [1])]):
        snippet = f"ILSVRC2015_val_{s:08d}"
        frames = [f"val/{snippet}/{f:06d}.JPEG" for f in range(3)]
        for key in frames:
            write_image(folder / key, label)
            labels[key] = [label, *extra]
        pmsets[frames[1]] = [frames[0], frames[2]]
        keys[snippet] = frames
    (folder / "metadata").mkdir(exist_ok=True)
    (folder / "metadata" / "labels.json").write_text(json.dumps(labels))
    (folder / "metadata" / "pmsets.json").write_text(json.dumps(pmsets))
    return folder, keys


YTBB_NAMES = ["person", "bird", "bicycle", "boat", "bus", "bear", "cow", "cat", "giraffe", "potted plant", "horse",
              "motorcycle", "knife", "airplane", "skateboard", "train", "truck", "zebra", "toilet", "dog", "elephant",
              "umbrella", "none", "car"]


def write_ytbb(root: Path) -> dict:
    """Three anchors (``vidA_1000/frame-15``, ``vidB_2000/frame-30``, ``vidC_3000/frame-45``): A is good with the
    annotated extra label "dog" and CSV label 23 (read as 22 -> swapped... "car" is 23 after the swap), two similar
    neighbours and one occluded; B is good with one neighbour; C is marked bad-anchor by a review. Returns the
    expected anchors, their labels and their pm-10 frames."""
    videos = root / "imagenet_vid_ytbb_robust" / "ytbb-robust" / "ytbb_videos"
    meta = root / "ytbb-robust_metadata"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "ytbb_class_index.json").write_text(json.dumps({str(i): n for i, n in enumerate(YTBB_NAMES)}))
    (meta / "ytbb_robustness_test_anchors_full.csv").write_text(
        "ytid,time_ms,label\nvidA,1000,22\nvidB,2000,1\nvidC,3000,7\n")
    anchor_labels = ["good", "unsure", "bad", *YTBB_NAMES]
    anchors = [("vidA_1000/frame-15.jpg", ["good", "dog"]), ("vidB_2000/frame-30.jpg", ["good"]),
               ("vidC_3000/frame-45.jpg", ["good"]), ("vidD_4000/frame-60.jpg", ["unsure"])]
    (meta / "anchor_labels.json").write_text(json.dumps({"labels": anchor_labels, "annotations": [
        {"key": k, "notes": "", "labels": [anchor_labels.index(x) for x in ls]} for k, ls in anchors]}))
    review_labels = ["similar", "dissimilar", "occlusion-increased", "bad-anchor", "correct"]
    reviews = [("vidA_1000/frame-15.jpg,vidA_1000/frame-14.jpg", ["similar"]),
               ("vidA_1000/frame-15.jpg,vidA_1000/frame-25.jpg", ["similar", "correct"]),
               ("vidA_1000/frame-15.jpg,vidA_1000/frame-16.jpg", ["similar", "occlusion-increased"]),
               ("vidA_1000/frame-15.jpg,vidA_1000/frame-26.jpg", ["similar"]),           # 11 frames away
               ("vidB_2000/frame-30.jpg,vidB_2000/frame-31.jpg", ["similar"]),
               ("vidC_3000/frame-45.jpg,vidC_3000/frame-46.jpg", ["bad-anchor"])]
    (meta / "pmk_labels.json").write_text(json.dumps({"labels": review_labels, "annotations": [
        {"key": k, "notes": "", "labels": [review_labels.index(x) for x in ls]} for k, ls in reviews]}))
    frames = ["vidA_1000/frame-14.jpg", "vidA_1000/frame-15.jpg", "vidA_1000/frame-16.jpg", "vidA_1000/frame-25.jpg",
              "vidA_1000/frame-26.jpg", "vidB_2000/frame-30.jpg", "vidB_2000/frame-31.jpg", "vidC_3000/frame-45.jpg",
              "vidC_3000/frame-46.jpg", "vidD_4000/frame-60.jpg"]
    for f in frames:
        write_image(videos / f, 0)
    return {"vidA_1000/frame-15.jpg": ({19, 23}, ["vidA_1000/frame-14.jpg", "vidA_1000/frame-25.jpg"]),
            "vidB_2000/frame-30.jpg": ({1}, ["vidB_2000/frame-31.jpg"])}


# ---- a stand-in for the wilds package --------------------------------------------------------------------------
class FakeSubset:
    """``WILDSSubset``'s API: ``__len__``, ``__getitem__`` -> (x, y, metadata), ``y_array``, ``metadata_array``."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, np.asarray(indices)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        j = int(self.indices[i])
        return self.dataset.images[j], self.dataset.y[j], self.dataset.metadata[j]

    @property
    def y_array(self):
        return self.dataset.y[self.indices]

    @property
    def metadata_array(self):
        return self.dataset.metadata[self.indices]


class FakeWildsDataset:
    """``WILDSDataset``'s API: ``split_dict``/``split_array``, ``get_subset(split)``, ``eval(y_pred, y_true,
    metadata) -> (results, str)``; metadata column 0 is the group (FMoW's region). ``eval`` records its arguments
    and reports wilds' keys: accuracy, worst-group accuracy, macro recall and F1 (over the true labels present)."""

    def __init__(self, n_classes=4, per_split=8, seed=0):
        rng = np.random.default_rng(seed)
        n = 3 * per_split
        self.split_dict = {"train": 0, "id_test": 2, "test": 4}
        self.split_array = np.repeat([0, 2, 4], per_split)
        self.y = torch.as_tensor(rng.integers(0, n_classes, n))
        self.metadata = torch.stack([torch.as_tensor(rng.integers(0, 3, n)), self.y], dim=1)
        self.images = [Image.new("RGB", (8, 8), (int(c), 0, 77)) for c in self.y]
        self.category_to_idx = {f"category_{i}": i for i in range(n_classes)}
        self.calls = []

    def get_subset(self, split, frac=1.0, transform=None):
        return FakeSubset(self, np.flatnonzero(self.split_array == self.split_dict[split]))

    def eval(self, y_pred, y_true, metadata, prediction_fn=None):
        self.calls.append((y_pred.clone(), y_true.clone(), metadata.clone()))
        hit = (y_pred == y_true).float()
        groups = [hit[metadata[:, 0] == g].mean().item() for g in metadata[:, 0].unique().tolist()]
        classes = y_true.unique().tolist()
        recall = [hit[y_true == c].mean().item() for c in classes]
        precision = [hit[y_pred == c].mean().item() if (y_pred == c).any() else 0.0 for c in classes]
        f1 = [2 * p * r / (p + r) if p + r else 0.0 for p, r in zip(precision, recall)]
        return {"acc_avg": hit.mean().item(), "acc_worst_region": min(groups), "recall-macro_all": float(np.mean(recall)),
                "F1-macro_all": float(np.mean(f1))}, "fake"


def install_fake_wilds(monkeypatch, dataset: FakeWildsDataset) -> list:
    """Make ``import wilds`` give a module whose ``get_dataset(dataset=..., root_dir=..., download=...)`` returns
    ``dataset``; returns the list of its calls' keyword arguments."""
    import sys
    import types
    calls = []
    module = types.ModuleType("wilds")

    def get_dataset(dataset_name=None, version=None, unlabeled=False, **kwargs):
        calls.append({"dataset": kwargs.pop("dataset", dataset_name), **kwargs})
        return dataset
    module.get_dataset = lambda dataset=None, **kw: get_dataset(dataset_name=dataset, **kw)
    monkeypatch.setitem(sys.modules, "wilds", module)
    return calls


def write_iwildcam_names(root: Path, n_classes=4) -> None:
    folder = root / "iwildcam_metadata"
    folder.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{i},{i * 3},latin {i},English {i}\n" for i in reversed(range(n_classes)))
    (folder / "labels.csv").write_text("y,category_id,name,english\n" + rows + "99999,999,unused,Unused\n")


def write_all(root: Path) -> Path:
    """Every fake under one --data_path (the README's done-when command runs on it)."""
    write_imagenet(root, [IMAGENET_WNIDS[c] for c in CLASSES], per_class_train=2, per_class_val=2)
    write_imagenet_a(root)
    folder = write_imagenet_r(root, per_class=1)
    import shutil
    for w in IMAGENET_R_WNIDS[4:]:                       # a subset: 4 classes
        shutil.rmtree(folder / w)
    write_sketch(root)
    write_v2(root)
    write_objectnet(root)
    write_vid_robust(root)
    write_ytbb(root)
    return root
