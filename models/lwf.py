"""Learning without Forgetting (Li & Hoiem, 2016) for class-incremental learning.

Cross-entropy over the classes seen so far, plus a temperature-scaled distillation that keeps the
past classes' outputs close to those of the network frozen at the end of the previous task.
The reference is mammoth's ``lwf``.

Deviations from the reference:
- The distillation is ``T^2 KL(softmax(old / T) || softmax(new / T))`` (Hinton et al.); mammoth uses
  ``-sum old' log new'`` with ``p' = p^(1/T) / sum p^(1/T)`` on the softmax outputs.
- The old network's logits are computed on each augmented training batch; mammoth computes them once per task,
  on the not-augmented images, before training.
- No head warm-up: mammoth first trains the new classes' classifier alone for ``--n_epochs`` on frozen features.
- ``--alpha`` defaults to 1.0 (mammoth: 0.5).
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.utils.continual_model import ContinualModel
from models.utils.frozen_net import FrozenNet
from utils.options import option


@dataclass
class LwfOptions:
    alpha: float = option(1.0, "weight of the distillation loss", min=0.0)
    softmax_temp: float = option(2.0, "distillation temperature", min=1e-3)


def distillation_loss(logits, old_logits, temperature: float):
    """KL(old || new) between temperature-softened distributions, scaled by T^2 (Hinton et al.)."""
    t = temperature
    return F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(old_logits / t, dim=1),
                    log_target=True, reduction="batchmean") * t * t


class Lwf(ContinualModel):
    NAME = "lwf"
    Options = LwfOptions

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.old_net = FrozenNet(self.net)

    def observe(self, inputs, labels, not_aug_inputs, epoch=None):
        self.optimizer.zero_grad()
        logits = self.net(inputs)[:, :self.n_seen_classes]
        loss = self.loss(logits, labels)
        if self.current_task > 0:
            with torch.no_grad():
                old = self.old_net(inputs)[:, :self.n_past_classes]
            loss = loss + self.opts.alpha * distillation_loss(logits[:, :self.n_past_classes], old,
                                                              self.opts.softmax_temp)
        self.backward_and_step(loss)
        return loss.item()

    def end_task(self, dataset):
        self.old_net.update(self.net)
