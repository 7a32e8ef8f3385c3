"""CLIP-Adapter (Gao et al., 2021) in the continual setting, as benchmarked by CLAP4CLIP.

A residual bottleneck adapter on the frozen image feature, f' = r * A(f) + (1 - r) * f with
A = ReLU(W2 ReLU(W1 f)) (no biases), against the frozen template-ensemble text classifier;
cross-entropy over all classes seen so far, with optional ER replay of cached features.
CLAP4CLIP rebuilt the adapter at every task (so it learnt each task from scratch plus memory);
here it is kept across tasks unless ``--reinit_each_task 1`` asks for the original behaviour.
"""
from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from models.utils.clip_model import ZERO_SHOT_SCALE, ClipModel
from utils.options import option


@dataclass
class ClipAdapterOptions:
    adapter_ratio: float = option(0.2, "residual ratio r in f' = r * A(f) + (1 - r) * f", min=0.0, max=1.0)
    adapter_reduction: int = option(4, "bottleneck reduction: the adapter maps D -> D/reduction -> D", min=1)
    reinit_each_task: bool = option(False, "re-initialise the adapter at every task (CLAP4CLIP's behaviour)")


def make_adapter(dim: int, reduction: int) -> nn.Sequential:
    hidden = max(1, dim // reduction)
    return nn.Sequential(nn.Linear(dim, hidden, bias=False), nn.ReLU(inplace=True),
                         nn.Linear(hidden, dim, bias=False), nn.ReLU(inplace=True))


class ClipAdapter(ClipModel):
    NAME = "clip-adapter"
    Options = ClipAdapterOptions
    DEFAULTS = {"backbone": "micro-clip", "n_epochs": 5, "lr": 0.01, "optim_mom": 0.9, "lr_scheduler": "cosine"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.adapter = make_adapter(self.clip.embed_dim, self.opts.adapter_reduction).to(self.device)
        self.register_buffer("text_weights", self.zero_shot_weights(), persistent=False)

    def begin_task(self, dataset):
        if self.opts.reinit_each_task and self.current_task > 0:
            for layer in self.adapter:
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()

    def forward(self, x):
        f = self.image_features(x)
        r = self.opts.adapter_ratio
        f = F.normalize(r * self.adapter(f) + (1 - r) * f, dim=-1)
        return ZERO_SHOT_SCALE * f @ self.text_weights.T

    def observe(self, inputs, labels, not_aug_inputs, epoch=None):
        self.optimizer.zero_grad()
        all_inputs, all_labels = self.with_replay(inputs, labels)
        loss = self.loss(self.forward(all_inputs)[:, :self.n_seen_classes], all_labels)
        self.backward_and_step(loss)
        self.remember(examples=not_aug_inputs, labels=labels)
        return loss.item()
