"""Experience Replay: each step trains on the stream batch plus a batch drawn from the memory.

The memory is a reservoir over the stream (``--buffer_size``) or, with ``--buffer_mode balanced`` /
``--buffer_per_class``, class-balanced exemplars chosen by ``--exemplar_selector`` at each task end.
"""
import torch

from models.utils.continual_model import ContinualModel


class Er(ContinualModel):
    NAME = "er"
    REQUIRES_BUFFER = True

    def observe(self, inputs, labels, not_aug_inputs, epoch=None):
        self.optimizer.zero_grad()
        replay = self.replay_batch()
        if replay is not None:
            inputs = torch.cat([inputs, self.transform(replay["examples"])])
            labels = torch.cat([labels, replay["labels"]])
        loss = self.loss(self.net(inputs), labels)
        loss.backward()
        self.optimizer.step()
        self.remember(examples=not_aug_inputs, labels=labels[:not_aug_inputs.shape[0]])
        return loss.item()
