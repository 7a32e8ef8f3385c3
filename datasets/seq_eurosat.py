"""``seq-eurosat``: EuroSAT (RGB) in 5 tasks of 2 classes, on MTIL's seeded 80/20 split (source ``eurosat``).

Like mammoth's ``seq-eurosat-rgb`` in shape (5 x 2, 224 px, ViT); its images and split are MTIL's, and
its class names and templates are MTIL's CLIP ones ("annual crop land", "a centered satellite photo of {}.").
"""
from __future__ import annotations

from datasets.utils.source_dataset import SourceDataset


class SequentialEuroSAT(SourceDataset):
    NAME = "seq-eurosat"
    SOURCE = "eurosat"
    N_TASKS = 5
    N_CLASSES_PER_TASK = 2
    DEFAULTS = {"backbone": "timm:vit_base_patch16_224", "n_epochs": 5, "batch_size": 128}
