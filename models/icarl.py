"""iCaRL (Rebuffi et al., 2017): herding exemplars, distillation, nearest-mean-of-exemplars classifier.

Training: sigmoid binary cross-entropy on the stream plus replayed exemplars, where the targets of
past classes are the frozen previous network's sigmoid outputs (distillation) and those of the
current classes are one-hot. The memory is class-balanced and filled by herding at each task end
(the loop does that before ``end_task``). Evaluation: the class whose exemplar mean (of normalised
features, image and its horizontal flip) is nearest to the normalised feature of the test image.
The reference is mammoth's ``icarl``.

Deviations from the reference:
- Replay: a memory batch is added to every stream batch (as ER); mammoth merges the memory into the task's
  training set (``icarl_replay``), so an epoch has more steps there.
- The binary cross-entropy covers the classes seen so far; mammoth's covers every output of the head.
- No explicit L2 penalty: mammoth adds ``1e-5 * sum(p^2)`` to the loss (``--opt_wd``) and forces the
  optimizer's weight decay to 0; here ``--optim_wd`` is the optimizer's.
- Class means are computed once at each task end from the memory (image and flip), where mammoth recomputes
  them lazily after training; the same quantity.
"""
import torch
import torch.nn.functional as F

from models.utils.continual_model import ContinualModel
from models.utils.frozen_net import FrozenNet
from utils.buffer import ClassBalancedBuffer
from utils.errors import UserError


class ICarl(ContinualModel):
    NAME = "icarl"
    REQUIRES_BUFFER = True
    DEFAULTS = {"buffer_mode": "balanced", "exemplar_selector": "herding"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.buffer, ClassBalancedBuffer):
            raise UserError("icarl needs a class-balanced memory: drop --buffer_mode reservoir")
        self.old_net = FrozenNet(self.net)
        feature_dim = self.net.feature_dim
        self.register_buffer("class_means", torch.zeros(self.n_classes, feature_dim, device=self.device))
        self.register_buffer("has_mean", torch.zeros(self.n_classes, dtype=torch.bool, device=self.device))

    def observe(self, inputs, labels, not_aug_inputs, epoch=None):
        self.optimizer.zero_grad()
        inputs, labels = self.with_replay(inputs, labels)
        logits = self.net(inputs)[:, :self.n_seen_classes]
        targets = F.one_hot(labels, self.n_seen_classes).float()
        if self.current_task > 0:
            with torch.no_grad():
                past = self.n_past_classes
                targets[:, :past] = torch.sigmoid(self.old_net(inputs)[:, :past])
        loss = F.binary_cross_entropy_with_logits(logits, targets)
        self.backward_and_step(loss)
        return loss.item()

    def forward(self, x):
        if self.training or not bool(self.has_mean.any()):
            return self.net(x)
        feats = F.normalize(self.net(x, returnt="features"), dim=1)
        dist = torch.cdist(feats, self.class_means)
        return torch.where(self.has_mean, -dist, torch.full_like(dist, float("-inf")))

    @torch.no_grad()
    def end_task(self, dataset):
        self.old_net.update(self.net)
        memory = self.memory_items()
        was_training = self.training
        self.eval()
        feats = []
        for chunk in memory["examples"].split(self.args.eval_batch_size):
            f = F.normalize(self.net(self.normalize(chunk), returnt="features"), dim=1)
            f_flip = F.normalize(self.net(self.normalize(chunk.flip(3)), returnt="features"), dim=1)
            feats.append((f + f_flip) / 2)
        feats = torch.cat(feats)
        labels = memory["labels"]
        sums = torch.zeros_like(self.class_means).index_add_(0, labels, feats)
        counts = torch.bincount(labels, minlength=self.n_classes).clamp_(min=1).unsqueeze(1)
        self.class_means.copy_(F.normalize(sums / counts, dim=1))
        self.has_mean.copy_(torch.bincount(labels, minlength=self.n_classes) > 0)
        self.train(was_training)
