"""Raw datasets: one module each that knows a dataset's on-disk format, files, checksums, class names
and CLIP templates, independently of how a benchmark splits it into tasks.

A source module defines a ``RawDataset`` subclass with ``NAME`` and implements ``prepare`` (make the
files present: verify, download and extract, or raise the one-line ``UserError``),
``native_class_names`` and ``load_split``. Benchmarks (``datasets/seq_*.py``, ``datasets/mtil.py``)
compose sources; several benchmarks share one source (EuroSAT is in ``seq-eurosat``, ``seq-vtab`` and
``mtil``) so each format is parsed in one place.
"""
from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from pathlib import Path
from typing import ClassVar, Sequence

from torch import Tensor

from datasets.utils.image_source import ImageSource
from utils.errors import unknown_name_error


class RawDataset:
    NAME: ClassVar[str] = ""
    #: CLIP prompt templates for this dataset (MTIL/CoOp conventions where they exist).
    TEMPLATES: ClassVar[tuple[str, ...]] = ("a photo of a {}.",)
    #: Splits this dataset has ("train", "test"; some also "val").
    SPLITS: ClassVar[tuple[str, ...]] = ("train", "test")

    def __init__(self, root: str | Path, download: bool = True, verify_data: bool = True):
        self.root = Path(root)
        self.download, self.verify_data = download, verify_data
        self.prepare()

    def prepare(self) -> None:
        """Make the files present and verified, or raise ``UserError`` naming path, layout and source."""
        raise NotImplementedError

    def native_class_names(self) -> Sequence[str]:
        """Readable (CLIP-style) class names in native label order."""
        raise NotImplementedError

    def load_split(self, split: str) -> tuple[Tensor | ImageSource, Tensor]:
        """``(images, native labels)``: a uint8 tensor (N, C, H, W) or an ``ImageSource``."""
        raise NotImplementedError


@lru_cache(maxsize=None)
def _sources() -> dict[str, type]:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, RawDataset) and value.NAME and \
                    value.__module__ == module.__name__:
                found[value.NAME] = value
    return found


def get_source(name: str) -> type:
    sources = _sources()
    if name not in sources:
        raise unknown_name_error("raw dataset", name, sources)
    return sources[name]
