"""``seq-vtab``: ADAM's VTAB benchmark (source ``vtab``) in 5 tasks of 10 classes, one per domain:
RESISC45, DTD, Oxford Pets, EuroSAT, Flowers-102, in that order, as ADAM/PILOT/CLAP4CLIP run it
(their class order is the native one; ``--class_order random`` shuffles classes within each domain only).
"""
from __future__ import annotations

from datasets.utils.source_dataset import SourceDataset


class SequentialVTAB(SourceDataset):
    NAME = "seq-vtab"
    SOURCE = "vtab"
    N_TASKS = 5
    N_CLASSES_PER_TASK = 10
    #: each task is one VTAB domain; a random class order must not mix domains
    PERMUTE_WITHIN_TASKS = True
    DEFAULTS = {"backbone": "timm:vit_base_patch16_224"}
