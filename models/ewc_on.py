"""Online EWC (Schwarz et al., 2018): a quadratic penalty that keeps the parameters near those of past tasks,
each weighted by its running (online) Fisher information.

After each task, the diagonal Fisher is estimated on that task's (augmented) training images, one image at a
time: the squared gradient of ``log p(y|x)`` at the true label, weighted by ``p(y|x)``, summed and divided by
``batches × --batch_size``; then ``F ← γ F + F_task`` and ``θ* ← θ``. Training adds
``λ Σ F (θ − θ*)²`` (``--e_lambda``, ``--gamma``) to the cross-entropy. The reference is mammoth's ``ewc_on``
(``models/ewc_on.py``), which sets the penalty's gradient ``2 λ F (θ − θ*)`` before ``loss.backward()``: the same
gradient as adding the penalty to the loss, as here (so it also goes through the fp16 grad scaler).

This file is the README's worked example of per-parameter state: ``self.fisher`` and ``self.theta_star`` are
dicts of tensors in plain attributes, which the base class checkpoints; the per-image gradients are one
``torch.func.vmap`` over ``functional_call`` on ``named_trainable_parameters()``.

Deviations from the reference:
- ``--e_lambda`` and ``--gamma`` default to 10 and 1.0, mammoth's seq-cifar10 settings (its flags are required
  and have no default).
- The per-image gradients are computed in batches of ``--batch_size`` with ``torch.func.vmap``, where mammoth runs
  one forward and backward pass per image; each image still gets BatchNorm statistics of its own, as mammoth's
  one-image passes in training mode do, so the Fisher is the same. Those passes of mammoth also move BatchNorm's
  running statistics once per training image, with one-image statistics, which changes the model that is then
  evaluated; here the Fisher pass leaves the model as it is. ``--fisher_bn_update 1`` restores mammoth's side
  effect (one extra forward pass per image in training mode, in the pass's order).
- The Fisher pass draws its images' order and augmentation from the method's seeded generator (mammoth: its
  shuffled train loader and the global RNG).
- ``observe`` returns the cross-entropy plus the penalty (mammoth returns the cross-entropy alone); only the
  printed loss and the divergence check see it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from models.utils.continual_model import ContinualModel
from utils.options import option


@dataclass
class EwcOnOptions:
    e_lambda: float = option(10.0, "weight λ of the penalty λ Σ F (θ − θ*)²", min=0.0)
    gamma: float = option(1.0, "decay of the online Fisher after each task: F ← γ F + F_task", min=0.0)
    fisher_bn_update: bool = option(False, "let the Fisher pass move BatchNorm's running statistics with one-image "
                                    "statistics, as mammoth's per-image passes in training mode do")


class _BatchNormOwnStatistics:
    """Within the block, BatchNorm layers in training mode normalise with the statistics of the batch they are
    given (one image under ``vmap``) and update no running statistics (which ``vmap`` could not do in place)."""

    def __init__(self, net: nn.Module):
        self.layers = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def __enter__(self):
        self.saved = [m.track_running_stats for m in self.layers]
        for m in self.layers:
            m.track_running_stats = False

    def __exit__(self, *exc):
        for m, saved in zip(self.layers, self.saved):
            m.track_running_stats = saved


class EwcOn(ContinualModel):
    NAME = "ewc_on"
    Options = EwcOnOptions

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fisher: dict[str, Tensor] | None = None      # plain attributes: checkpointed by the base class
        self.theta_star: dict[str, Tensor] | None = None

    def penalty(self) -> Tensor:
        """``λ Σ F (θ − θ*)²`` over the trained parameters (0 before the first task has ended)."""
        if self.fisher is None:
            return torch.zeros((), device=self.device)
        params = self.named_trainable_parameters()
        total = sum((self.fisher[n] * (p - self.theta_star[n]) ** 2).sum() for n, p in params.items())
        return self.opts.e_lambda * total

    def observe(self, inputs, labels, not_aug_inputs, epoch=None):
        self.optimizer.zero_grad()
        loss = self.loss(self.net(inputs), labels)
        if self.fisher is not None:
            loss = loss + self.penalty()
        self.backward_and_step(loss)
        return loss.item()

    def end_task(self, dataset):
        fisher = self.task_fisher(dataset.task_data(self.current_task, "train"))
        if self.fisher is None:
            self.fisher = fisher
        else:
            self.fisher = {n: self.opts.gamma * self.fisher[n] + f for n, f in fisher.items()}
        self.theta_star = {n: p.detach().clone() for n, p in self.named_trainable_parameters().items()}

    def task_fisher(self, data) -> dict[str, Tensor]:
        """The diagonal Fisher of one task's training data, as mammoth estimates it (see the module's doc)."""
        params = {n: p.detach() for n, p in self.named_trainable_parameters().items()}
        net = self.net

        def log_likelihood(weights, x, y):
            logits = functional_call(net, weights, (x.unsqueeze(0),))
            return F.log_softmax(logits.float(), dim=1)[0].gather(0, y.unsqueeze(0))[0]

        n_weights = sum(p.numel() for p in params.values())
        chunk = max(1, min(self.args.batch_size, (1 << 26) // max(n_weights, 1)))   # per-image grads: ~256 MB
        per_image = vmap(grad_and_value(log_likelihood), in_dims=(None, 0, 0), randomness="different",
                         chunk_size=chunk)
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        batch_size = self.args.batch_size
        for batch in data.batches(batch_size, shuffle=True, generator=self.generator, train=True):
            self.check_stop()                                         # SIGINT/SIGTERM stop the pass too
            x, y = batch["inputs"].to(self.device), batch["labels"].to(self.device)
            with _BatchNormOwnStatistics(net):
                grads, log_p = per_image(params, x, y)
            weight = log_p.detach().exp()                                 # p(y|x): mammoth's exp_cond_prob
            for n, g in grads.items():
                fisher[n] += torch.einsum("b,b...->...", weight, g.float() ** 2).to(fisher[n].dtype)
            if self.opts.fisher_bn_update:
                with torch.no_grad():
                    for image in x:
                        net(image.unsqueeze(0))
        scale = data.num_batches(batch_size) * batch_size               # mammoth: len(train_loader) * batch_size
        return {n: f / scale for n, f in fisher.items()}
