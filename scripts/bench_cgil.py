"""Time CGIL's generator fits for one task: all classes as one batched model against one class at a time.

    python scripts/bench_cgil.py [--classes 10] [--per_class 200] [--dim 128] [--epochs 50] [--device cpu]

One class at a time is mammoth's way (``models/cgil_utils/vae.py``): per class an ``nn.Module`` VAE (same layers),
``torch.optim.Adam``, a shuffled ``DataLoader`` of batch 64 and ``CosineAnnealingWarmRestarts``, fitted one after the
other. The batched fit is ``models/utils/cgil_generators.fit_vaes`` over all the task's classes; it is also timed
class by class (its own code, one class per call) to separate batching from the rest. The features are random
(a fit's cost does not depend on their values); the defaults are seq-synth's task (10 classes of 200 images,
micro-clip's 128-d embeddings) with mammoth's VAE (hidden 512, latent 256). Time grows linearly with ``--epochs``
(mammoth: 500). Each contestant runs once after a one-epoch warm-up; the machine's load shows in the numbers.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.utils.cgil_generators import VaeConfig, fit_vaes, warm_restart_lrs  # noqa: E402


class LoopVae(nn.Module):
    """mammoth's VAE (encoder with BatchNorm, decoder, exp(logvar) as the std), fitted as mammoth fits it."""

    def __init__(self, dim: int, hidden: int, latent: int):
        super().__init__()
        self.latent = latent
        self.enc = nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2, inplace=True),
                                 nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2, inplace=True),
                                 nn.Linear(hidden, 2 * latent))
        self.dec = nn.Sequential(nn.Linear(latent, hidden), nn.LeakyReLU(0.2, inplace=True),
                                 nn.Linear(hidden, hidden), nn.LeakyReLU(0.2, inplace=True), nn.Linear(hidden, dim))

    def fit(self, x: torch.Tensor, epochs: int, lr: float) -> None:
        lo, hi = x.min(0).values, x.max(0).values
        x = (x - lo) / (hi - lo)
        x = (x - x.mean(0)) / x.std(0)
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=max(1, epochs // 10), T_mult=2)
        loader = torch.utils.data.DataLoader(x, batch_size=64, shuffle=True, num_workers=0, drop_last=False)
        self.train()
        for _ in range(epochs):
            for batch in loader:
                if len(batch) == 1:
                    continue
                opt.zero_grad()
                h = self.enc(batch)
                mu, logvar = h[:, :self.latent], h[:, self.latent:]
                rec = self.dec(torch.randn_like(mu) * torch.exp(logvar) + mu)
                nll = nn.functional.gaussian_nll_loss(rec, batch, torch.ones_like(rec), full=True, reduction="sum")
                kl = 0.5 * torch.sum(torch.exp(logvar) + mu ** 2 - 1.0 - logvar)
                ((nll + kl) / len(batch)).backward()
                opt.step()
            sched.step()
        self.eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--per_class", type=int, default=200)
    p.add_argument("--dim", type=int, default=128, help="embedding size (micro-clip 128, ViT-B/16 512, ViT-L/14 768)")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--latent", type=int, default=256)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip_own_loop", action="store_true", help="do not time fit_vaes one class per call")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(a.per_class, a.dim, generator=gen) for _ in range(a.classes)]
    labels = list(range(a.classes))
    cfg = VaeConfig(a.hidden, a.latent, a.epochs)
    warm = VaeConfig(a.hidden, a.latent, 1)
    assert len(warm_restart_lrs(cfg.lr, cfg.epochs)) == a.epochs

    fit_vaes(feats[:2], labels[:2], warm, 0, device)                       # warm-up
    LoopVae(a.dim, a.hidden, a.latent).to(device).fit(feats[0].to(device), 1, cfg.lr)
    batched = timed(lambda: fit_vaes(feats, labels, cfg, 0, device), device)

    def mammoth_loop():
        for f in feats:
            LoopVae(a.dim, a.hidden, a.latent).to(device).fit(f.to(device), a.epochs, cfg.lr)
    loop = timed(mammoth_loop, device)
    own = None if a.skip_own_loop else \
        timed(lambda: [fit_vaes([f], [i], cfg, 0, device) for i, f in enumerate(feats)], device)
    print(f"CGIL generator fits, one task: {a.classes} classes x {a.per_class} embeddings of {a.dim}, VAE hidden "
          f"{a.hidden} latent {a.latent}, {a.epochs} epochs, {device}, {a.threads} thread(s)")
    print(f"  batched (all classes at once):          {batched:8.2f} s")
    print(f"  one class at a time (mammoth's loop):   {loop:8.2f} s   ratio {loop / batched:5.2f} x")
    if own is not None:
        print(f"  one class at a time (fit_vaes per class): {own:6.2f} s   ratio {own / batched:5.2f} x")
    print(f"  per epoch: batched {batched / a.epochs * 1000:.1f} ms, mammoth's loop {loop / a.epochs * 1000:.1f} ms "
          f"(target: >= 5 x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
