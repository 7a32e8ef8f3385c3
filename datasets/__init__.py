"""Benchmarks: one file each in this folder, found by their ``NAME``."""
from __future__ import annotations

from utils import registry

_BASE = "datasets.utils.continual_dataset.ContinualDataset"


def list_datasets() -> list[str]:
    return registry.names(__name__, _BASE)


def get_dataset_class(name: str) -> type:
    return registry.lookup(__name__, _BASE, name, "dataset")
