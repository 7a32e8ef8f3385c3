"""GDumb (Prabhu et al., 2020): a greedy sampler fills a memory from the stream, and a "dumb learner" is trained
from scratch on the memory alone; the stream itself is never trained on.

The reference is mammoth's ``gdumb`` (``models/gdumb.py``): a reservoir memory of ``--buffer_size`` items, and
after the last task the network is re-initialised and fitted on the memory for ``--fitting_epochs`` (256) with
SGD (the run's momentum, weight decay and Nesterov flag): one warm-up epoch at ``--maxlr`` / 10, then ``--maxlr``
(0.05) with cosine warm restarts (``T_0 = 1``, ``T_mult = 2``, down to ``--minlr`` 5e-4) stepped each epoch from the
third; each epoch is one shuffled, augmented pass over the memory in batches of ``--batch_size``, with CutMix
(``--cutmix_alpha`` 1.0) on half of the batches. Before the fit the network is the untrained initial one, so the
accuracy matrix's earlier rows are those of an untrained network; ``--fit_each_task 1`` fits after every task
(the paper's protocol: every row is then a GDumb model).

This file is the README's worked example of a method that trains outside ``observe``: it declares
``TRAINS_ON_STREAM = False`` (the loop runs no epochs and never calls ``observe``), reads the finished task's
data in ``end_task``, builds its own optimizer and steps it with ``self.step(loss, optimizer)``.

Deviations from the reference:
- The memory sees each task's training images once, in ``end_task``, in an order drawn from the method's seeded
  generator (mammoth: in ``observe``, over the loop's one epoch with ``--lr 0``); ``--buffer_mode balanced`` gives
  a class-balanced memory instead of the reservoir (closer to the paper's class-balanced sampler).
- The fit starts from the network's initial weights each time (the same seeded initialisation), where mammoth
  builds a new backbone from the global RNG.
- CutMix's draws (whether a batch is mixed, λ ~ Beta(α, α), the box, the partner permutation) come from the
  method's seeded generator, where mammoth uses numpy's and torch's global RNGs; ``--cutmix_alpha 0`` turns it off
  (mammoth: ``None``).
- ``--fit_each_task`` is an addition.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from models.utils.continual_model import ContinualModel
from utils.buffer import ReservoirBuffer
from utils.options import option
from utils.optimizers import make_optimizer


@dataclass
class GdumbOptions:
    maxlr: float = option(5e-2, "the fit's learning rate after its warm-up epoch (maxlr / 10)", min=0.0)
    minlr: float = option(5e-4, "the lowest learning rate of the fit's cosine warm restarts", min=0.0)
    fitting_epochs: int = option(256, "epochs of the fit on the memory", min=0)
    cutmix_alpha: float = option(1.0, "CutMix's Beta(α, α) on half of the fit's batches (0: no CutMix)", min=0.0)
    fit_each_task: bool = option(False, "fit after every task (the paper's protocol) instead of after the last "
                                 "one only (mammoth)")


class Gdumb(ContinualModel):
    NAME = "gdumb"
    REQUIRES_BUFFER = True
    TRAINS_ON_STREAM = False
    Options = GdumbOptions

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # the initial weights, which every fit starts from (not checkpointed: a rebuilt run has the same ones)
        self._initial = {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def end_task(self, dataset):
        if isinstance(self.buffer, ReservoirBuffer):      # a class-balanced memory is filled by the loop already
            data = dataset.task_data(self.current_task, "train")
            for batch in data.batches(self.args.batch_size, shuffle=True, generator=self.generator):
                self.remember(examples=batch["not_aug_inputs"].to(self.device),
                              labels=batch["labels"].to(self.device), indexes=batch["indexes"].to(self.device))
        if self.opts.fit_each_task or self.current_task == self.n_tasks - 1:
            self.fit_memory()

    def fit_memory(self) -> None:
        """Re-initialise the network and fit it on the memory alone (mammoth's ``fit_buffer``)."""
        a, o = self.args, self.opts
        self.net.load_state_dict(self._initial)
        self.net.train()
        optimizer = make_optimizer("sgd", self.get_parameters(), o.maxlr, momentum=a.optim_mom,
                                   weight_decay=a.optim_wd, nesterov=a.optim_nesterov and a.optim_mom > 0)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=1, T_mult=2, eta_min=o.minlr)
        items = self.memory_items()
        examples, labels = items["examples"], items["labels"]
        n, batch_size = len(labels), a.batch_size
        bar = tqdm(total=o.fitting_epochs, desc="gdumb: fit on memory", leave=False, disable=a.quiet)
        for epoch in range(o.fitting_epochs):
            if epoch <= 1:                                    # one warm-up epoch at maxlr / 10, then maxlr
                for group in optimizer.param_groups:
                    group["lr"] = o.maxlr * (0.1 if epoch == 0 else 1.0)
            else:
                scheduler.step()
            order = torch.randperm(n, generator=self.generator).to(self.device)
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                inputs, targets = self.transform(examples[idx]), labels[idx]
                optimizer.zero_grad()
                if o.cutmix_alpha > 0:
                    inputs, targets_b, lam = self.cutmix(inputs, targets)
                    outputs = self.net(inputs)
                    loss = lam * self.loss(outputs, targets) + (1 - lam) * self.loss(outputs, targets_b)
                else:
                    loss = self.loss(self.net(inputs), targets)
                self.step(loss, optimizer)
            bar.update()
        bar.close()

    def cutmix(self, x: Tensor, y: Tensor, prob: float = 0.5) -> tuple[Tensor, Tensor, float]:
        """CutMix as mammoth's ``cutmix_data``: with probability ``prob``, a box of area ~(1 − λ) of each image is
        replaced by that of a partner in the batch; returns the images, the partners' labels and λ (the kept area)."""
        g = self.generator
        if float(torch.rand((), generator=g)) > prob:
            return x, y, 1.0
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=g)))
        lam = rng.beta(self.opts.cutmix_alpha, self.opts.cutmix_alpha)
        partner = torch.randperm(x.shape[0], generator=g).to(x.device)
        w, h = x.shape[2], x.shape[3]                         # mammoth's rand_bbox names them so
        cut = np.sqrt(1.0 - lam)
        cut_w, cut_h = int(w * cut), int(h * cut)
        cx, cy = int(rng.integers(w)), int(rng.integers(h))
        x1, x2 = np.clip(cx - cut_w // 2, 0, w), np.clip(cx + cut_w // 2, 0, w)
        y1, y2 = np.clip(cy - cut_h // 2, 0, h), np.clip(cy + cut_h // 2, 0, h)
        x = x.clone()
        x[:, :, x1:x2, y1:y2] = x[partner, :, x1:x2, y1:y2]
        lam = 1.0 - (x2 - x1) * (y2 - y1) / (x.shape[-1] * x.shape[-2])
        return x, y[partner], float(lam)
