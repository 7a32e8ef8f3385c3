"""The optimisation recipe of the CLAP4CLIP code base, which its CLAP and AttriCLIP share (and so do ours).

The run's optimizer (SGD without momentum by default) at lr x batch_size / 20, stepped every iteration by
a linear warm-up from 0 over ``warmup_fraction()`` of the task's steps, then a cosine down to lr x 1e-3
(:func:`utils.schedulers.warmup_cosine`), rebuilt at every task. ``--lr_scheduler`` and
``--scheduler_mode`` do not apply to these methods.
"""
from __future__ import annotations

import torch

from utils.schedulers import warmup_cosine

#: the batch size at which ``--lr`` is the effective learning rate
REFERENCE_BATCH = 20


class BatchScaledWarmupCosine:
    """Mixin for a :class:`~models.utils.continual_model.ContinualModel` (list it first among the bases)."""

    def warmup_fraction(self) -> float:
        return 0.0

    def lr_scale(self) -> float:
        return self.args.batch_size / REFERENCE_BATCH

    def get_optimizer(self) -> torch.optim.Optimizer:
        optimizer = super().get_optimizer()
        for group in optimizer.param_groups:
            group["lr"] *= self.lr_scale()
        return optimizer

    def get_scheduler(self, steps_per_epoch: int, n_epochs: int):
        return warmup_cosine(self.optimizer, steps_per_epoch * n_epochs, self.warmup_fraction())

    @property
    def scheduler_mode(self) -> str:
        return "iter"
