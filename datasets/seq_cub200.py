"""``seq-cub200``: CUB-200-2011 in 10 tasks of 20 bird species, official train/test split (source ``cub200``),
as mammoth's ``seq-cub200`` (224 px, ViT) and CLAP4CLIP's CUB benchmark. Normalisation for non-CLIP backbones
is mammoth's: ImageNet statistics (CLIP backbones use their own preprocessing)."""
from __future__ import annotations

from datasets.utils.source_dataset import SourceDataset


class SequentialCUB200(SourceDataset):
    NAME = "seq-cub200"
    SOURCE = "cub200"
    N_TASKS = 10
    N_CLASSES_PER_TASK = 20
    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)
    DEFAULTS = {"backbone": "timm:vit_base_patch16_224", "n_epochs": 50, "batch_size": 128}
