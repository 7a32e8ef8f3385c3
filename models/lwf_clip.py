"""LwF for CLIP, as ZSCL runs it (Zheng et al., ICCV 2023; ``mtil/scripts/lwf.sh``): continual fine-tuning of CLIP
(``finetune``) plus ZSCL's feature-space distillation from the model *after the previous task* (zero-shot CLIP
for the first task), on the current task's own data. The classic ``lwf`` (logit distillation of a classifier)
is another method; the MTIL framework's ``--method lwf`` is a no-op (it has no branch and runs as finetune).

Each step: cross-entropy with label smoothing ``--ls`` (0.2, ZSCL's scripts) on the first-template text
classifier, plus (``models/utils/clip_distillation.py`` has the exact forms)

- reference images: the current task's training images with the test transform (CLIP's resize + centre crop, no
  augmentation);
- reference sentences: the current task's class prompts (each class name in its task's first template);
- image loss (each image's distribution over the prompts) and text loss (each prompt's distribution over the
  batch's images), ``--T`` 2, weights ``--image_loss_weight`` / ``--text_loss_weight`` (1, 1), against the
  frozen teacher's features on both sides of the sentences (``--text_distill_target teacher``).

The teacher is refreshed at the start of every task from the weights the previous task ended with (after any
weight-space merge that task made, e.g. ``--wise_merge``), and its features of the task's prompts and training
images are encoded once per task.

Options: those of ``finetune`` (``--train_mode``, ``--ls``, ``--warmup_iters``, the weight-space options, OGD, LoRA)
and of the distillation (``--image_loss``, ``--text_loss``, ``--image_loss_weight``, ``--text_loss_weight``, ``--T``,
``--text_distill_target teacher|student``, ``--task_lr NAME=LR``).

Deviations from the reference:
- The reference images of a step are the training batch's own images, un-augmented; ZSCL draws them from a second,
  independently shuffled loader over the same training set (the same images over the task, paired differently).
- The teacher is the previous task's model in memory; ZSCL loads it from the previous task's checkpoint file
  (``--ref-model``), which holds the same weights.
- The distillation loss is KL, ZSCL's CE minus the teacher's entropy (same gradient; 0 when the models agree).
- ZSCL's teacher re-encodes the prompts and the reference batch every step; here they are encoded once per task.
- ZSCL's CE is over the current task's classes on MTIL (as here on task-IL sequences); on class-IL benchmarks the
  CE here ranks every class seen so far (as ``finetune``), while the reference prompts are the current task's.
"""
from __future__ import annotations

from typing import Iterator

from torch import Tensor

from models.utils.clip_distillation import DistillationClipModel


class LwfClip(DistillationClipModel):
    NAME = "lwf-clip"

    def begin_task(self, dataset) -> None:
        super().begin_task(dataset)
        if self.current_task > 0:                # the model after the previous task (zero-shot CLIP before task 1)
            self.teacher.update(self.clip)
        self.teacher_changed()

    def reference_batch(self, not_aug_inputs: Tensor, indexes: Tensor) -> tuple[Tensor, Tensor]:
        return not_aug_inputs, indexes

    def reference_image_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        data = self.dataset.task_data(self.current_task, "train")
        for batch in data.batches(self.args.eval_batch_size):
            yield batch["indexes"], batch["not_aug_inputs"]

    def reference_tokens(self) -> Tensor:
        return self.clip.tokenize(self.train_prompts(self.n_past_classes, self.n_seen_classes))
