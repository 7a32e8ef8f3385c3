"""Tiny CIFAR-10/100 in the python-pickle layout torchvision downloads."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CIFAR100_NAMES = [f"class_{i:02d}" for i in range(100)]


def _dump(obj, path: Path) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


def write_cifar100(root: Path, per_class_train: int = 3, per_class_test: int = 2, seed: int = 0) -> Path:
    """``root/cifar-100-python/{train,test,meta}``; image pixels encode the label (pixel [0,0,0] = label)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", per_class_train), ("test", per_class_test)):
        labels = np.repeat(np.arange(100), n)
        rng.shuffle(labels)
        data = rng.integers(0, 256, size=(len(labels), 3 * 32 * 32), dtype=np.uint8)
        data[:, 0] = labels
        _dump({"data": data, "fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist()}, folder / split)
    _dump({"fine_label_names": CIFAR100_NAMES, "coarse_label_names": [f"super_{i}" for i in range(20)]},
          folder / "meta")
    return folder


def write_cifar10(root: Path, per_class_train: int = 3, per_class_test: int = 2, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.repeat(np.arange(10), per_class_train)
    rng.shuffle(labels)
    for i, chunk in enumerate(np.array_split(labels, 5), start=1):
        data = rng.integers(0, 256, size=(len(chunk), 3072), dtype=np.uint8)
        data[:, 0] = chunk
        _dump({"data": data, "labels": chunk.tolist()}, folder / f"data_batch_{i}")
    test = np.repeat(np.arange(10), per_class_test)
    data = rng.integers(0, 256, size=(len(test), 3072), dtype=np.uint8)
    data[:, 0] = test
    _dump({"data": data, "labels": test.tolist()}, folder / "test_batch")
    _dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]},
          folder / "batches.meta")
    return folder
