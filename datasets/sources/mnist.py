"""MNIST as a raw dataset: the four gzipped idx-ubyte files, in torchvision's ``MNIST/raw`` folder (so a
copy torchvision downloaded is reused), with torchvision's mirror and md5s. Kept decoded in memory:
(N, 3, 28, 28) uint8, the grey channel expanded to three (a view, no copy)."""
from __future__ import annotations

import gzip
import zlib

import numpy as np
import torch

from datasets.sources import RawDataset
from datasets.utils.download import Remote
from datasets.utils.folders import fetch_file
from utils.errors import UserError

MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_FILES = {
    "train": (("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
              ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432")),
    "test": (("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
             ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c")),
}


def read_idx(path) -> np.ndarray:
    """An idx-ubyte array (uint8 data, big-endian dims), from a .gz file."""
    try:
        with gzip.open(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"{path} is corrupt ({type(exc).__name__}: {exc}); delete it and download it again") from None
    # magic: two zero bytes, the data type (0x08 = uint8) and the number of dimensions
    ndim = data[3] if len(data) >= 4 and data[:3] == b"\0\0\x08" else 0
    if ndim == 0 or len(data) < 4 + 4 * ndim:
        raise UserError(f"{path} is not an idx-ubyte file of uint8 data; delete it and download it again")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise UserError(f"{path} is truncated: {array.size} values for shape {shape}; delete it and download it again")
    return array.reshape(shape)


class MNIST(RawDataset):
    NAME = "mnist"
    #: CLIP's / MTIL's MNIST template (class names are the digits).
    TEMPLATES = ('a photo of the number: "{}".',)

    def prepare(self):
        self.folder = self.root / "MNIST" / "raw"
        for split in ("train", "test"):
            for name, md5 in MNIST_FILES[split]:
                fetch_file(Remote(MNIST_MIRROR + name, name, f"md5:{md5}"), self.folder, self.download,
                           self.verify_data,
                           f"MNIST: '{self.folder / name}' is missing (expected {self.folder}/ with "
                           f"{', '.join(n for files in MNIST_FILES.values() for n, _ in files)}). Run without "
                           f"--download 0 to fetch them from {MNIST_MIRROR}, or point --data_path at a folder "
                           f"that contains MNIST/raw/")

    def native_class_names(self):
        return [str(digit) for digit in range(10)]

    def load_split(self, split):
        (images_file, _), (labels_file, _) = MNIST_FILES[split]
        images, labels = read_idx(self.folder / images_file), read_idx(self.folder / labels_file)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(f"{self.folder}: {images_file} {images.shape} and {labels_file} {labels.shape} "
                            f"do not match")
        images = torch.from_numpy(images.copy()).unsqueeze(1).expand(-1, 3, -1, -1)
        return images, torch.from_numpy(labels.astype(np.int64))
