"""``seq-synth``: 100 concepts of the embedded synthetic world in 10 tasks of 10 classes (``--synth_tasks``).

Generated in memory from a seed: no files, no network. The 100 classes are the world's benchmark
concepts, disjoint from the concepts micro-clip is pretrained on, so zero-shot accuracy on them is
compositional transfer; and each class's images cycle over all eight rendering domains, four of which
micro-clip never saw (neon, mosaic, clutter, faded: see ``datasets/utils/synthetic_world.py``), so
zero-shot is also imperfect transfer to new styles, which a trained method can learn.
``--synth_domains seen`` keeps the pretraining domains only (no style gap), ``unseen`` the new ones only, and a
domain's name (``neon``) that domain alone.
``--synth_tasks 1`` trains all 100 classes as one task: a method's joint-training upper bound, which tells
forgetting apart from what the method cannot learn on this world at all.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from datasets.utils.continual_dataset import ContinualDataset
from datasets.utils.synthetic_world import (
    ALL_DOMAINS, BENCHMARK_DOMAINS, DOMAINS, TEMPLATES, UNSEEN_DOMAINS, SyntheticWorld,
)
from utils.augment import RandomCropFlip
from utils.options import option


@dataclass
class SynthOptions:
    synth_train_per_class: int = option(200, "training images generated per class", min=1)
    synth_test_per_class: int = option(50, "test images generated per class", min=1)
    synth_world_seed: int = option(0, "seed of the image generator (not of the class order: see --seed)", min=0)
    synth_domains: str = option("all", "rendering domains of the images: all eight (default), the four micro-clip "
                                "was pretrained on (seen: no style gap), the four it never saw (unseen), or one "
                                "domain by name (photo, ..., faded)",
                                choices=("all", "seen", "unseen", *ALL_DOMAINS))
    synth_tasks: int = option(10, "number of equal tasks the 100 classes are split into; 1 trains them all at once "
                              "(joint training: the method's upper bound)", choices=(1, 2, 5, 10, 20))


#: --synth_domains -> the domains each class's images cycle over (one domain alone: a single look, as most real
#: datasets have, which separates "a new style" from "a mixture of styles")
DOMAIN_SETS = {"all": BENCHMARK_DOMAINS, "seen": DOMAINS, "unseen": UNSEEN_DOMAINS, **{d: (d,) for d in ALL_DOMAINS}}


class SequentialSynth(ContinualDataset):
    NAME = "seq-synth"
    SETTING = "class-il"
    N_TASKS = 10
    N_CLASSES_PER_TASK = 10
    Options = SynthOptions
    TEMPLATES = TEMPLATES
    MEAN = (0.5, 0.5, 0.5)
    STD = (0.25, 0.25, 0.25)
    #: 5 epochs: on the eight-domain world one epoch of a from-scratch CNN learns a task to about 67 % only, and
    #: ER with 500 images then ends at 12.25 % against SGD's 7.98 (seeds 0-1); with 5 epochs ER ends at 54.82 (seed 0)
    DEFAULTS = {"backbone": "small-cnn", "n_epochs": 5, "batch_size": 32, "lr": 0.05}
    IMAGE_SIZE = 32

    def __init__(self, args, options=None):
        self.options = options if options is not None else SynthOptions()
        self.world = SyntheticWorld(seed=self.options.synth_world_seed, image_size=self.IMAGE_SIZE)
        self.concept_ids = self.world.benchmark_concepts()
        self.N_TASKS = self.options.synth_tasks
        self.N_CLASSES_PER_TASK = len(self.concept_ids) // self.options.synth_tasks
        super().__init__(args, self.options)

    def native_class_names(self) -> list[str]:
        return [self.world.concepts[i].name for i in self.concept_ids]

    def load_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels, _domains = self.world.make_split(self.concept_ids, self._per_class(split), split,
                                                         domains=DOMAIN_SETS[self.options.synth_domains])
        return images, labels

    def load_split_labels(self, split: str) -> torch.Tensor:
        # make_split returns the images sorted by label, n per concept
        return torch.arange(len(self.concept_ids)).repeat_interleave(self._per_class(split))

    def _per_class(self, split: str) -> int:
        return self.options.synth_train_per_class if split == "train" else self.options.synth_test_per_class

    def train_augmentation(self):
        return RandomCropFlip(padding=4)
