"""``seq-synth``: 100 concepts of the embedded synthetic world in 10 tasks of 10 classes.

Generated in memory from a seed: no files, no network. The 100 classes are the world's benchmark
concepts, disjoint from the concepts a tiny CLIP is pretrained on, so zero-shot accuracy on them
is compositional transfer.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from datasets.utils.continual_dataset import ContinualDataset
from datasets.utils.synthetic_world import TEMPLATES, SyntheticWorld
from utils.augment import RandomCropFlip
from utils.options import option


@dataclass
class SynthOptions:
    synth_train_per_class: int = option(200, "training images generated per class", min=1)
    synth_test_per_class: int = option(50, "test images generated per class", min=1)
    synth_world_seed: int = option(0, "seed of the image generator (not of the class order: see --seed)", min=0)


class SequentialSynth(ContinualDataset):
    NAME = "seq-synth"
    SETTING = "class-il"
    N_TASKS = 10
    N_CLASSES_PER_TASK = 10
    Options = SynthOptions
    TEMPLATES = TEMPLATES
    MEAN = (0.5, 0.5, 0.5)
    STD = (0.25, 0.25, 0.25)
    DEFAULTS = {"backbone": "small-cnn", "n_epochs": 1, "batch_size": 32, "lr": 0.05}
    IMAGE_SIZE = 32

    def __init__(self, args, options=None):
        self.options = options if options is not None else SynthOptions()
        self.world = SyntheticWorld(seed=self.options.synth_world_seed, image_size=self.IMAGE_SIZE)
        self.concept_ids = self.world.benchmark_concepts()
        super().__init__(args, self.options)

    def native_class_names(self) -> list[str]:
        return [self.world.concepts[i].name for i in self.concept_ids]

    def load_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels, _domains = self.world.make_split(self.concept_ids, self._per_class(split), split)
        return images, labels

    def load_split_labels(self, split: str) -> torch.Tensor:
        # make_split returns the images sorted by label, n per concept
        return torch.arange(len(self.concept_ids)).repeat_interleave(self._per_class(split))

    def _per_class(self, split: str) -> int:
        return self.options.synth_train_per_class if split == "train" else self.options.synth_test_per_class

    def train_augmentation(self):
        return RandomCropFlip(padding=4)
