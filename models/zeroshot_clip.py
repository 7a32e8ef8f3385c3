"""Continual-CLIP (Thengane et al., 2022): zero-shot CLIP, no training at all.

Each class is the mean of its L2-normalised template embeddings, re-normalised; logits are
s * cos(image, class), s the weights' ``logit_scale.exp()`` (``--logit_scale``), over every class seen so far
(and over future ones with --eval_future).
The reference is CLAP4CLIP's ``clclip`` (Continual-CLIP with template ensembles).

Deviations from the reference:
- Continual-CLIP itself (Thengane et al.) used one template per dataset, no ensemble; the dataset's templates
  decide here (one template reproduces it).
"""
import torch.nn.functional as F

from models.utils.clip_model import ClipModel


class ZeroshotClip(ClipModel):
    NAME = "zeroshot-clip"
    DEFAULTS = {"backbone": "micro-clip", "n_epochs": 0}
    SCORES_OTHER_DATASETS = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("text_weights", self.zero_shot_weights(), persistent=False)

    def observe(self, inputs, labels, not_aug_inputs, epoch=None):
        return 0.0

    def forward(self, x):
        return self.logit_scale * F.normalize(self.image_features(x), dim=-1) @ self.text_weights.T
