"""Fine-tuning: plain SGD on the current task only, the lower bound that forgetting is measured against.

The reference is mammoth's ``sgd``.

Deviations from the reference:
- None in the method; the training loop's batching and augmentation are Tusk's (batched tensor augmentation,
  one seeded data order).
"""
from models.utils.continual_model import ContinualModel


class Sgd(ContinualModel):
    NAME = "sgd"

    def observe(self, inputs, labels, not_aug_inputs, epoch=None):
        self.optimizer.zero_grad()
        loss = self.loss(self.net(inputs), labels)
        self.backward_and_step(loss)
        return loss.item()
