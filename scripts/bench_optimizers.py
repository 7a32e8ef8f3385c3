"""Time one optimizer step over a CLIP's parameters: torch's CPU default (a loop over the tensors) against the
optimizer Tusk builds (``utils/optimizers.py``: the multi-tensor update for Adam and AdamW; the same numbers).

    python scripts/bench_optimizers.py [--clip micro-clip] [--optimizer adamw] [--threads 1] [--steps 20]

The gradients are random (a step's cost does not depend on their values); every parameter is trained, as
``finetune --train_mode whole`` does.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backbone.clip import create_clip  # noqa: E402
from utils.optimizers import OPTIMIZER_CLASSES, OPTIMIZERS, make_optimizer  # noqa: E402


def step_ms(opt: torch.optim.Optimizer, steps: int) -> float:
    opt.step()                                              # the state is created on the first step
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - start) / steps * 1000


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip", default="micro-clip")
    p.add_argument("--optimizer", default="adamw", choices=OPTIMIZERS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    params = [q.detach().clone().requires_grad_() for q in create_clip(a.clip).parameters()]
    for q in params:
        q.grad = torch.randn_like(q)
    cls = OPTIMIZER_CLASSES[a.optimizer]
    extra = {"momentum": 0.9} if a.optimizer == "sgd" else {}
    loop = step_ms(cls(params, lr=1e-4, weight_decay=0.1, foreach=False, **extra), a.steps)
    multi = step_ms(make_optimizer(a.optimizer, params, 1e-4, weight_decay=0.1, **extra), a.steps)
    n = sum(q.numel() for q in params)
    print(f"{a.optimizer} step over {a.clip}'s {len(params)} tensors ({n / 1e6:.1f}M parameters), {a.threads} thread(s)")
    print(f"  one tensor at a time (torch's CPU default): {loop:7.1f} ms")
    print(f"  Tusk's (multi-tensor for Adam and AdamW):   {multi:7.1f} ms   ratio {loop / multi:4.2f} x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
