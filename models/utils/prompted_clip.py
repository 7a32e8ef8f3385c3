"""``PromptedClip``: the shared shape of the prompt baselines (CoOp, MaPLe, ...).

A subclass builds its :class:`~models.utils.prompt_learners.PromptLearner` in ``make_prompt``; this
class scores images against the prompt's class features (s x cosine, per-image text allowed) and
trains with cross-entropy over every class seen so far (with optional ER replay) plus the prompt's own
loss (AttriCLIP's matching and orthogonality terms). Learned prompts
also score class names of tasks not trained yet, so ``--eval_future`` works.
"""
from __future__ import annotations

import torch
from torch import Tensor

from models.utils.clip_model import ClipModel
from models.utils.prompt_learners import PromptLearner, PromptOutput
from utils.schedulers import constant_warmup


def prompt_logits(out: PromptOutput, scale: float) -> Tensor:
    """scale x cos(image, class) for shared (C, D) or per-image (B, C, D) class features."""
    if out.text.ndim == 2:
        return scale * out.image @ out.text.T
    return scale * torch.einsum("bd,bcd->bc", out.image, out.text)


class PromptedClip(ClipModel):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.prompt = self.make_prompt().to(self.device)

    def make_prompt(self) -> PromptLearner:
        raise NotImplementedError

    def get_scheduler(self, steps_per_epoch: int, n_epochs: int):
        """With ``--warmup_epochs`` (CoOp, MaPLe): Dassl's constant warm-up at ``--warmup_lr``, then the run's
        cosine (``--lr_scheduler cosine``) or constant lr, per epoch or iteration as ``--scheduler_mode``."""
        warmup = getattr(self.opts, "warmup_epochs", 0)
        if not warmup or self.args.lr_scheduler == "multisteplr":
            return super().get_scheduler(steps_per_epoch, n_epochs)
        unit = 1 if self.scheduler_mode == "epoch" else max(steps_per_epoch, 1)
        return constant_warmup(self.optimizer, n_epochs * unit, warmup * unit, self.opts.warmup_lr,
                               cosine=self.args.lr_scheduler == "cosine")

    def logits(self, x: Tensor, n_classes: int) -> Tensor:
        return prompt_logits(self.prompt(x, n_classes), self.logit_scale)

    def forward(self, x):
        return self.logits(x, self.n_classes)

    def stream_and_replay(self, inputs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Stream + one replay batch (``MemoryReplay`` replaces it where ``--replay append`` exists)."""
        return self.with_replay(inputs, labels)

    def train_loss(self, inputs: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy over every class seen so far on stream + replay, plus the prompt's own loss."""
        inputs, labels = self.stream_and_replay(inputs, labels)
        out = self.prompt(inputs, self.n_seen_classes)
        loss = self.loss(prompt_logits(out, self.logit_scale), labels)
        return loss if out.aux_loss is None else loss + out.aux_loss

    def observe(self, inputs, labels, not_aug_inputs, epoch=None):
        self.optimizer.zero_grad()
        loss = self.train_loss(inputs, labels)
        self.backward_and_step(loss)
        self.remember(examples=not_aug_inputs, labels=labels)
        return loss.item()
