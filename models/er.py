"""Experience Replay: each step trains on the stream batch plus a batch drawn from the memory.

The memory is a reservoir over the stream (``--buffer_size``) or, with ``--buffer_mode balanced`` /
``--buffer_per_class``, class-balanced exemplars chosen by ``--exemplar_selector`` at each task end.
The reference is mammoth's ``er`` (stream batch + ``--minibatch_size`` memory batch, reservoir memory).

Deviations from the reference:
- The replay batch is augmented with the dataset's batched augmentation on the tensor, where mammoth applies
  its PIL transform per item; ``--minibatch_size`` defaults to ``--batch_size`` (mammoth: the dataset's
  ``get_minibatch_size()``).
- The class-balanced memory (``--buffer_mode balanced``) is an addition; mammoth's ER is reservoir only.
"""
from models.utils.continual_model import ContinualModel


class Er(ContinualModel):
    NAME = "er"
    REQUIRES_BUFFER = True

    def observe(self, inputs, labels, not_aug_inputs, epoch=None):
        self.optimizer.zero_grad()
        all_inputs, all_labels = self.with_replay(inputs, labels)
        loss = self.loss(self.net(all_inputs), all_labels)
        self.backward_and_step(loss)
        self.remember(examples=not_aug_inputs, labels=labels)
        return loss.item()
