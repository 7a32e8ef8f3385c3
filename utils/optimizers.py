"""The optimizers every method builds, in one place: torch's SGD, and Adam and AdamW with the multi-tensor
(``foreach``) update.

torch picks the multi-tensor update by default only when every parameter is on a GPU; on a CPU it falls back to
a Python loop over the parameters (``_single_tensor_adam``), whose cost grows with their number and, for AdamW, is
several elementwise passes per tensor. The foreach update does the same arithmetic over all tensors at once and
gives the same numbers bit for bit (``tests/test_optimizers.py``), so a CPU run matches a GPU run's choice and
costs less: fine-tuning micro-clip, whose 6.3M-entry token embedding dominates its 7.8M parameters, AdamW's step
takes 18 ms instead of 40 (one thread; ``python scripts/bench_optimizers.py``). SGD keeps torch's default: its
loop is one pass per tensor, and the multi-tensor form measured no faster (9.3 against 10.4 ms, ``--optimizer sgd``).
"""
from __future__ import annotations

from typing import Iterable

import torch

#: name -> torch's class: the one list of what exists (``--optimizer``, CGIL's ``--optim_alignment``)
OPTIMIZER_CLASSES = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
OPTIMIZERS = tuple(OPTIMIZER_CLASSES)


def make_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float, *, momentum: float = 0.0,
                   weight_decay: float = 0.0, nesterov: bool = False) -> torch.optim.Optimizer:
    """``name`` in OPTIMIZERS, with torch's defaults for everything not given (Adam's betas 0.9/0.999, eps 1e-8)."""
    if name not in OPTIMIZER_CLASSES:
        raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
    cls, params = OPTIMIZER_CLASSES[name], list(params)
    if name == "sgd":
        return cls(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    return cls(params, lr=lr, weight_decay=weight_decay, foreach=True)
