"""iCaRL for CLIP, as ZSCL's MTIL framework runs it (Zheng et al., ICCV 2023; ``mtil/src/models/icarl.py`` with
``dynamic_dataset.py``, ``--method icarl``): continual fine-tuning of CLIP (``finetune``) plus ZSCL's feature-space
distillation on a bounded memory of exemplar images of the previous tasks. The classic ``icarl`` (sigmoid
distillation of a classifier, nearest-mean-of-exemplars) is another method.

Each step: cross-entropy with label smoothing ``--ls`` (0.2) on the current task's first-template text classifier,
plus the image and text distillation of ``models/utils/clip_distillation.py`` (``--T`` 2, weights 1 and 1) on the
next ``--batch_size`` exemplars of the memory (in memory order, starting over when it runs out, as the anchor's
``batch()``), against the current task's prompts, with the teacher's sentence features on both sides. The teacher
is zero-shot CLIP (``--teacher zeroshot``: the anchor never sets ``--ref-model`` in its iCaRL) or the model after the
previous task (``--teacher prev``, LwF's choice). The first task has no exemplars: plain fine-tuning, as the
anchor's. Exemplars enter the distillation only: the anchor has no exemplar cross-entropy and no
nearest-mean classifier; evaluation is ``finetune``'s text classifier.

The memory (``--buffer_size K``, the total; one exemplar set per task): after task t, every task's set holds
``K // t`` images, the old sets cut to their first ``K // t`` and the new one the first ``K // t`` of iCaRL's herding
(``utils/exemplar_selection.py``: greedily toward the mean of the task's L2-normalised features) over the task's
training images, un-augmented through CLIP's test transform, encoded by the task's final model (after any
``--we``/``--wise_merge``). The memory stores dataset indices (``--buffer_storage index``, the default here: images
are re-read when a step needs them) or the images (``tensor``); its ``labels`` column is the task of each exemplar.

Options: ``finetune``'s (``--train_mode``, ``--ls``, ``--warmup_iters``, the weight-space options, OGD, LoRA), the
distillation's (``--image_loss``, ``--text_loss``, their weights, ``--T``, ``--text_distill_target``,
``--task_lr``) and ``--teacher``.

Deviations from the reference:
- The memory holds at most ``--buffer_size`` items (fixed bug): the anchor cuts each old set to ``K // t`` but herds
  ``K - K // t`` new exemplars, so after task t it holds ``K + (t - 2) * (K // t)``, over K from the third task.
- The exemplars are the images herding picks (fixed bug): the anchor deletes each pick from its feature array but
  reads the image at the same index of the full image list, so after its first pick it stores other images.
- The first task is herded too (the anchor keeps its first K images in dataset order), and every training image
  of a task is a candidate (the anchor reads at most the first 30,000).
- The distillation is on by default (``--image_loss 1 --text_loss 1``): the anchor adds it only with
  ``--image_loss``/``--text_loss``, which its shipped ``icarl.sh`` passes neither of (with ``--iterations 5``), so
  as shipped it is plain fine-tuning.
- The memory is dataset indices or one tensor (the anchor: Python nested lists of preprocessed images, up to tens
  of GB); the teacher's features of the exemplars and prompts are encoded once per task, where the anchor's
  teacher re-encodes them every step.
- The distillation loss is KL, ZSCL's CE minus the teacher's entropy (same gradient; 0 when the models agree).
- ``--teacher prev`` is not in the anchor. The anchor hard-codes lr 5e-5 for Aircraft and MNIST:
  ``--task_lr aircraft=5e-5 mnist=5e-5``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Iterator

import torch
from torch import Tensor

from models.utils.clip_distillation import DistillationClipModel, DistillationOptions
from models.utils.finetune_clip import FinetuneClipModel
from utils.buffer import ClassBalancedBuffer
from utils.errors import UserError
from utils.exemplar_selection import rank_exemplars
from utils.options import option
from utils.precision import autocast


@dataclass
class ICarlClipOptions(DistillationOptions):
    teacher: str = option("zeroshot", "the distillation teacher: zeroshot (zero-shot CLIP, the MTIL framework's) or "
                          "prev (the model after the previous task)", choices=("zeroshot", "prev"))


class ICarlClip(DistillationClipModel):
    NAME = "icarl-clip"
    Options: ClassVar[type] = ICarlClipOptions
    REQUIRES_BUFFER: ClassVar[bool] = True
    DEFAULTS: ClassVar[dict] = {**DistillationClipModel.DEFAULTS, "buffer_mode": "balanced",
                                "exemplar_selector": "herding", "buffer_storage": "index"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.buffer, ClassBalancedBuffer) or self.buffer.per_class is not None:
            raise UserError("icarl-clip's memory is one total --buffer_size shared by the tasks: drop "
                            "--buffer_mode reservoir and --buffer_per_class")
        if self.args.exemplar_selector != "herding":
            raise UserError(f"icarl-clip selects its exemplars by herding: drop --exemplar_selector "
                            f"{self.args.exemplar_selector}")
        self._cursor = 0                    # the next memory position a step distils on

    def begin_task(self, dataset) -> None:
        super().begin_task(dataset)
        if self.opts.teacher == "prev" and self.current_task > 0:
            self.teacher.update(self.clip)
        self.teacher_changed()              # new exemplars, new prompts (and maybe a new teacher)
        self._cursor = 0

    # ---- the reference data: the memory and the current task's prompts --------------------------
    def memory_slice(self, positions: Tensor) -> Tensor:
        """[0, 1] images (or cached features) of the memory items at ``positions``."""
        items = {k: v[positions.to(v.device)] for k, v in self.buffer.get_all().items()}
        return self._with_examples(items)["examples"]

    def reference_batch(self, not_aug_inputs: Tensor, indexes: Tensor) -> tuple[Tensor, Tensor]:
        size = len(self.buffer)
        end = min(self._cursor + self.args.batch_size, size)
        positions = torch.arange(self._cursor, end)
        self._cursor = end if end < size else 0
        return self.memory_slice(positions), positions

    def reference_image_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        for start in range(0, len(self.buffer), self.args.eval_batch_size):
            positions = torch.arange(start, min(start + self.args.eval_batch_size, len(self.buffer)))
            yield positions, self.memory_slice(positions)

    def reference_tokens(self) -> Tensor:
        return self.clip.tokenize(self.train_prompts(self.n_past_classes, self.n_seen_classes))

    def observe(self, inputs, labels, not_aug_inputs, indexes=None, epoch=None):
        if self.buffer.is_empty():          # the first task: nothing to distil on yet
            return FinetuneClipModel.observe(self, inputs, labels, not_aug_inputs, epoch)
        return super().observe(inputs, labels, not_aug_inputs, indexes, epoch)

    # ---- the memory --------------------------------------------------------------------------
    @torch.no_grad()
    def update_balanced_memory(self, dataset) -> None:
        """Herd ``K // t`` exemplars of the task just trained on its final model's normalised image features (the
        loop calls this after the task's weights are final, before ``end_task``); old tasks keep their first
        ``K // t``."""
        column = "indexes" if self.args.buffer_storage == "index" else "examples"
        was_training = self.training
        self.eval()
        feats, stored = [], []
        for batch in dataset.task_data(self.current_task, "train").batches(self.args.eval_batch_size):
            x = batch["not_aug_inputs"].to(self.device)
            with autocast(self.precision, self.device):
                feats.append(self.image_features(self.normalize(x)).float())
            stored.append(x if column == "examples" else batch["indexes"].to(self.device))
        self.train(was_training)
        features = torch.cat(feats)
        task = torch.full((features.shape[0],), self.current_task, dtype=torch.long, device=self.device)
        ranking = rank_exemplars("herding", task, features=features, k=self.buffer.quota(self.current_task + 1))
        self.buffer.update({column: torch.cat(stored), "labels": task}, ranking)
