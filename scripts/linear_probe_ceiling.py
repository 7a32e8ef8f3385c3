"""The ceiling of frozen-feature methods on seq-synth: a linear classifier on micro-clip's frozen image
features, fitted on every class's training images at once (no continual constraint), tested on the test set.

A frozen-feature method (CLIP-Adapter, CoOp's image side, CLAP's heads) cannot beat what its features hold;
this says how much that is, overall and per rendering domain.

Usage: python scripts/linear_probe_ceiling.py [--synth_domains all|seen|unseen] [--weight_decay 1e-4]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbone.micro_clip import ZERO_SHOT_LOGIT_SCALE, create_micro_clip, encode_images  # noqa: E402
from datasets.seq_synth import DOMAIN_SETS  # noqa: E402
from datasets.utils.synthetic_world import ALL_DOMAINS, SyntheticWorld  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--synth_domains", default="all", choices=sorted(DOMAIN_SETS))
    p.add_argument("--train_per_class", type=int, default=200)
    p.add_argument("--test_per_class", type=int, default=50)
    p.add_argument("--weight_decay", type=float, default=1e-4)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    model, world = create_micro_clip(), SyntheticWorld(0)
    classes, domains = world.benchmark_concepts(), DOMAIN_SETS[args.synth_domains]
    x, y, _ = world.make_split(classes, args.train_per_class, "train", domains=domains)
    xt, yt, dt = world.make_split(classes, args.test_per_class, "test", domains=domains)
    f, ft = F.pad(encode_images(model, x), (0, 1), value=1.0), F.pad(encode_images(model, xt), (0, 1), value=1.0)
    w = torch.zeros(f.shape[1], len(classes), requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(ZERO_SHOT_LOGIT_SCALE * f @ w / 10, y) + args.weight_decay * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    pred = (ft @ w).argmax(1)
    print(f"linear-probe ceiling on seq-synth ({args.synth_domains} domains): "
          f"{100 * (pred == yt).float().mean():.2f} %")
    for d in dt.unique().tolist():
        sel = dt == d
        print(f"  {ALL_DOMAINS[d]:>8}: {100 * (pred[sel] == yt[sel]).float().mean():.1f} %")


if __name__ == "__main__":
    main()
