"""Learning-rate schedules the source systems use beyond torch's built-ins."""
from __future__ import annotations

import math

import torch


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float = 0.0,
                  final_factor: float = 1e-3) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule of CLAP4CLIP and AttriCLIP: linear warm-up over the first ``w = int(warmup_fraction x
    total_steps)`` steps, then cosine from the base lr down to ``final_factor`` x lr.

    Step it once per iteration; step ``s`` (0-based, before the update) uses factor ``f(s)``: ``(s + 1) / (w + 1)``
    during the warm-up (CLAP4CLIP's ``np.linspace(0, lr, w + 2)[1:-1]``: the first step already moves, at
    lr / (w + 1)), then ``final + (1 - final) (1 + cos(pi (s - w) / (T - w))) / 2``.
    """
    total = max(int(total_steps), 1)
    warmup = int(warmup_fraction * total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return final_factor + (1 - final_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def constant_warmup(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, warmup_lr: float,
                    cosine: bool = True) -> torch.optim.lr_scheduler.LambdaLR:
    """Dassl's ``ConstantWarmupScheduler`` around ``CosineAnnealingLR(T_max=total)`` (CoOp's and MaPLe's
    ``WARMUP_TYPE: constant``, ``WARMUP_CONS_LR: 1e-5``): steps ``s < w`` run at ``warmup_lr``, then step ``s`` at
    lr x 0.5 x (1 + cos(pi (s - w) / T)) (the cosine restarts after the warm-up, ``WARMUP_RECOUNT``, and does not
    reach 0 within the run), or at lr without ``cosine``. Steps are epochs or iterations, as the loop steps it."""
    total, warmup = max(int(total_steps), 1), int(warmup_steps)
    base = [group["lr"] for group in optimizer.param_groups]

    def factor(i: int):
        def f(step: int) -> float:
            if step < warmup:
                return warmup_lr / base[i] if base[i] else 0.0
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / total)) if cosine else 1.0
        return f

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor(i) for i in range(len(base))])


def zscl_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int
                ) -> torch.optim.lr_scheduler.LambdaLR:
    """ZSCL's ``cosine_lr`` (``mtil/src/utils.py``): step ``s`` (0-based, before the update) uses
    lr x (s + 1) / w during the ``w = warmup_steps`` warm-up steps, then lr x 0.5 x (1 + cos(pi (s - w) / (T - w))),
    which is 0 at ``s = T = total_steps``. Step it once per iteration.

    ZSCL runs T + 1 steps (``range(iterations + 1)``), the last one at lr 0, which changes no weight
    (AdamW's update and its weight decay both scale with the lr): training T steps is the same run.
    With ``w >= T`` the run ends inside the warm-up, as ZSCL's would.
    """
    total, warmup = max(int(total_steps), 1), int(warmup_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min((step - warmup) / max(total - warmup, 1), 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
