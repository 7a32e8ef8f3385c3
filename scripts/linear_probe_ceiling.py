"""The ceiling of frozen-feature methods on the synthetic benchmarks: a linear classifier on micro-clip's frozen
image features, fitted on every class's training images at once (no continual constraint), tested on the test set.

A frozen-feature method (CLIP-Adapter, CoOp's image side, CLAP's heads) cannot beat what its features hold;
this says how much that is: on seq-synth overall and per rendering domain, and on synth-mtil per dataset, beside
zero-shot (what fine-tuning a dataset should at least reach, since its features start there).

Usage: python scripts/linear_probe_ceiling.py [--benchmark seq-synth|synth-mtil]
       [--synth_domains all|seen|unseen|DOMAIN]
       [--weight_decay 1e-4]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbone.micro_clip import (ZERO_SHOT_LOGIT_SCALE, create_micro_clip, encode_images,  # noqa: E402
                                 micro_clip_tokenizer, zero_shot_accuracy)
from datasets.seq_synth import DOMAIN_SETS  # noqa: E402
from datasets.utils.synthetic_tasks import SYNTH_TASKS, make_task_split  # noqa: E402
from datasets.utils.synthetic_world import ALL_DOMAINS, SyntheticWorld  # noqa: E402


def fit_probe(f: torch.Tensor, y: torch.Tensor, n_classes: int, weight_decay: float) -> torch.Tensor:
    """Multinomial logistic regression (with a bias column) by L-BFGS; returns the (D + 1, C) weights."""
    f = F.pad(f, (0, 1), value=1.0)
    w = torch.zeros(f.shape[1], n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(ZERO_SHOT_LOGIT_SCALE * f @ w / 10, y) + weight_decay * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def probe_predict(w: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (F.pad(f, (0, 1), value=1.0) @ w).argmax(1)


def seq_synth(model, world, args) -> None:
    classes, domains = world.benchmark_concepts(), DOMAIN_SETS[args.synth_domains]
    x, y, _ = world.make_split(classes, args.train_per_class, "train", domains=domains)
    xt, yt, dt = world.make_split(classes, args.test_per_class, "test", domains=domains)
    w = fit_probe(encode_images(model, x), y, len(classes), args.weight_decay)
    pred = probe_predict(w, encode_images(model, xt))
    print(f"linear-probe ceiling on seq-synth ({args.synth_domains} domains): "
          f"{100 * (pred == yt).float().mean():.2f} %")
    for d in dt.unique().tolist():
        sel = dt == d
        print(f"  {ALL_DOMAINS[d]:>8}: {100 * (pred[sel] == yt[sel]).float().mean():.1f} %")


def synth_mtil(model, world, args) -> None:
    """Per dataset: chance, zero-shot (template ensemble, as evaluation) and the linear probe, on its own classes (task-IL)."""
    tokenizer = micro_clip_tokenizer()
    print("linear-probe ceiling on synth-mtil, per dataset (task-IL: its own classes)")
    print(f"  {'dataset':>9}  classes  chance  zero-shot  probe (train)")
    for name, task in sorted(SYNTH_TASKS.items()):
        x, y = make_task_split(world, task, args.train_per_class, "train")
        xt, yt = make_task_split(world, task, args.test_per_class, "test")
        f, ft = encode_images(model, x), encode_images(model, xt)
        w = fit_probe(f, y, len(task.class_names), args.weight_decay)
        probe = 100 * (probe_predict(w, ft) == yt).float().mean()
        train = 100 * (probe_predict(w, f) == y).float().mean()
        zero_shot = 100 * zero_shot_accuracy(model, tokenizer, xt, yt, task.class_names, task.templates)
        print(f"  {name:>9}  {len(task.class_names):7d}  {100 / len(task.class_names):6.1f}  {zero_shot:9.1f}  "
              f"{probe:5.1f} ({train:.1f})")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--benchmark", default="seq-synth", choices=("seq-synth", "synth-mtil"))
    p.add_argument("--synth_domains", default="all", choices=sorted(DOMAIN_SETS), help="seq-synth only")
    p.add_argument("--train_per_class", type=int, default=None, help="default: the benchmark's (200 / 100)")
    p.add_argument("--test_per_class", type=int, default=None, help="default: the benchmark's (50 / 25)")
    p.add_argument("--weight_decay", type=float, default=1e-4)
    args = p.parse_args(argv)
    mtil = args.benchmark == "synth-mtil"
    args.train_per_class = args.train_per_class or (100 if mtil else 200)
    args.test_per_class = args.test_per_class or (25 if mtil else 50)
    torch.manual_seed(0)
    model, world = create_micro_clip(), SyntheticWorld(0)
    (synth_mtil if mtil else seq_synth)(model, world, args)


if __name__ == "__main__":
    main()
