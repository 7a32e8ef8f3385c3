"""``synth-mtil``: seven synthetic "datasets" in sequence, in the style of MTIL (ZSCL's Multi-domain
Task-Incremental Learning), offline and in minutes on two cores.

Each task is its own dataset with its own classes, class names, templates and look (the table in
``datasets/utils/synthetic_tasks.py``: counting, icons, scenes, shades, shapes, styles, textures), 82 classes
in all. micro-clip's zero-shot accuracy on them ranges from near chance (shades, counting) through middling
(textures, styles, scenes) to high (shapes, icons), so fine-tuning has much to gain on each, and much zero-shot
transfer to lose on the datasets not trained yet: the MTIL pattern. As ``mtil``: task-IL evaluation
(``SETTING``), per-dataset templates (the first is the training prompt, evaluation averages them all),
``--mtil_order I|II`` (or any comma-separated sequence of the seven), and with ``--eval_future 1`` the Transfer /
Avg / Last summary in ``metrics.task_il.mtil``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from datasets.utils.continual_dataset import ContinualDataset
from datasets.utils.synthetic_tasks import ORDERS, SYNTH_TASKS, make_task_split
from datasets.utils.synthetic_world import SyntheticWorld
from datasets.utils.task_order import resolve_task_order
from utils.options import option


@dataclass
class SynthMTILOptions:
    mtil_order: str = option("I", "task order: I (alphabetical: " + ", ".join(ORDERS["I"]) + "), II ("
                             + ", ".join(ORDERS["II"]) + "), or a comma-separated list of datasets (a subset or "
                             "another order)")
    synth_train_per_class: int = option(100, "training images generated per class", min=1)
    synth_test_per_class: int = option(25, "test images generated per class", min=1)
    synth_world_seed: int = option(0, "seed of the image generator (not of the class order: see --seed)", min=0)


class SynthMTIL(ContinualDataset):
    NAME = "synth-mtil"
    SETTING = "task-il"
    PERMUTE_WITHIN_TASKS = True
    Options = SynthMTILOptions
    #: CLIP's normalisation, as mtil
    MEAN = (0.48145466, 0.4578275, 0.40821073)
    STD = (0.26862954, 0.26130258, 0.27577711)
    DEFAULTS = {"backbone": "micro-clip", "batch_size": 32, "optimizer": "adamw", "lr": 1e-5}
    IMAGE_SIZE = 32

    #: 2: scenes are pairs of colours, no longer pairs of shapes; 3: shades are aircraft against the sky, no
    #: longer single objects in the pretraining domains (shapes' look)
    CONTENT_VERSION = 3

    #: the datasets of the sequence, each of which ``--eval_datasets`` can evaluate alone (name -> task name)
    MEMBERS = {name: name for name in SYNTH_TASKS}

    def __init__(self, args, options=None, tasks=None):
        """``tasks``: these datasets only, in this order (one of them for ``--eval_datasets shapes``)."""
        options = options if options is not None else SynthMTILOptions()
        self.refuse_global_class_order(args)
        self.world = SyntheticWorld(seed=options.synth_world_seed, image_size=self.IMAGE_SIZE)
        self.member_tasks = list(tasks) if tasks else None
        self.task_names = list(tasks or resolve_task_order(options.mtil_order, ORDERS, {n: n for n in SYNTH_TASKS}))
        self.tasks = [SYNTH_TASKS[n] for n in self.task_names]
        self.N_TASKS = len(self.tasks)
        self.N_CLASSES_PER_TASK = [len(t.class_names) for t in self.tasks]
        super().__init__(args, options)

    def native_class_names(self) -> list[str]:
        return [name for t in self.tasks for name in t.class_names]

    def task_templates(self, task: int) -> tuple[str, ...]:
        return self.tasks[task].templates

    def load_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels, offset = [], [], 0
        for t in self.tasks:
            x, y = make_task_split(self.world, t, self._per_class(split), split)
            images.append(x)
            labels.append(y + offset)
            offset += len(t.class_names)
        return torch.cat(images), torch.cat(labels)

    def load_split_labels(self, split: str) -> torch.Tensor:
        n = self._per_class(split)
        return torch.arange(self.n_classes).repeat_interleave(n)   # every task's labels are sorted

    def _per_class(self, split: str) -> int:
        return self.options.synth_train_per_class if split == "train" else self.options.synth_test_per_class
