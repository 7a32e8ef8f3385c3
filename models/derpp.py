"""DER++ (Buzzega et al., 2020): replay the memory's stored logits, and its labels too.

The memory keeps each stream image with the network's logits at the time it was seen. Two replay
batches per step: one matched to its stored logits with an MSE term (weight ``alpha``, the "dark
knowledge"), one trained with cross-entropy on its labels (weight ``beta``). With ``--beta 0`` this
is DER. The README's worked example of adding a method as one file. The reference is mammoth's ``derpp``.

Deviations from the reference:
- ``--alpha`` and ``--beta`` default to 0.1 and 0.5 (mammoth requires both on the command line; its
  ``best`` configs set them per dataset and buffer size).
- ``--minibatch_size`` defaults to ``--batch_size`` (mammoth: the dataset's ``get_minibatch_size()``).
"""
from dataclasses import dataclass

import torch.nn.functional as F

from models.utils.continual_model import ContinualModel
from utils.options import option


@dataclass
class DerppOptions:
    alpha: float = option(0.1, "weight of the logit-matching (MSE) term on replayed items", min=0.0)
    beta: float = option(0.5, "weight of the cross-entropy term on replayed items (0 = DER)", min=0.0)


class Derpp(ContinualModel):
    NAME = "derpp"
    REQUIRES_BUFFER = True
    Options = DerppOptions

    def observe(self, inputs, labels, not_aug_inputs, epoch=None):
        self.optimizer.zero_grad()
        logits = self.net(inputs)
        loss = self.loss(logits, labels)
        if not self.buffer.is_empty():
            old = self.replay_batch()
            loss = loss + self.opts.alpha * F.mse_loss(self.net(self.transform(old["examples"])), old["logits"])
            if self.opts.beta > 0:
                old = self.replay_batch()
                loss = loss + self.opts.beta * self.loss(self.net(self.transform(old["examples"])), old["labels"])
        self.backward_and_step(loss)
        self.remember(examples=not_aug_inputs, labels=labels, logits=logits.detach())
        return loss.item()
