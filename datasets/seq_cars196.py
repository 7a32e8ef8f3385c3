"""``seq-cars196``: Stanford Cars in 10 tasks, official train/test split (source ``stanford_cars``).

196 classes do not split evenly into 10 tasks: as mammoth's ``seq-cars196``, nine tasks of 20 classes
and a last one of 16. Normalisation for non-CLIP backbones is mammoth's: none (mean 0, std 1; CLIP backbones use
their own preprocessing).
"""
from __future__ import annotations

from datasets.utils.source_dataset import SourceDataset


class SequentialCars196(SourceDataset):
    NAME = "seq-cars196"
    SOURCE = "stanford_cars"
    N_TASKS = 10
    N_CLASSES_PER_TASK = [20] * 9 + [16]
    MEAN = (0.0, 0.0, 0.0)
    STD = (1.0, 1.0, 1.0)
    DEFAULTS = {"backbone": "timm:vit_base_patch16_224", "n_epochs": 50, "batch_size": 128}
