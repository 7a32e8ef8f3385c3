"""What the frozen-feature cache buys: ``clip-adapter`` on ``seq-synth`` three ways.

1. with the cache, starting empty (every image encoded once, then features reused across epochs,
   tasks and evaluations), and again with the cache already filled by that run;
2. without the cache (``--feature_cache off``): the image encoder runs on every batch of every epoch
   and every evaluation;
3. the floor: one encoder pass over every train and test image, nothing else.

    python scripts/bench_feature_cache.py [--n_epochs 5] [--backbone micro-clip] [--device cpu]

Targets: cached (cold) <= 1.5 x floor; uncached / cached >= 5.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backbone.clip import ClipOptions, create_clip  # noqa: E402
from datasets.seq_synth import SequentialSynth  # noqa: E402
from utils.config import parse_config  # noqa: E402
from utils.precision import autocast, resolve_precision  # noqa: E402
from bench_timing import timed_run  # noqa: E402


def floor(argv: list[str], backbone: str, device: str, batch_size: int) -> float:
    """One encoder pass over every train and test image (the data generation included, as in the runs)."""
    config, _ = parse_config(argv)
    dev = torch.device(device)
    precision = resolve_precision(config.run.precision, dev)
    start = time.perf_counter()
    ds = SequentialSynth(config.run, config.data)
    clip = create_clip(backbone, ClipOptions()).to(dev)
    with torch.no_grad():
        for split in ("train", "test"):
            for x in ds.image_batches(split, batch_size, size=clip.image_size):
                with autocast(precision, dev):
                    clip.encode_image(clip.preprocess(x.to(dev)))
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n_epochs", type=int, default=5)
    p.add_argument("--backbone", default="micro-clip")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = ["--model", "clip-adapter", "--dataset", "seq-synth", "--backbone", args.backbone, "--seed", "0",
                "--n_epochs", str(args.n_epochs), "--device", args.device, "--quiet", "1",
                "--results_path", f"{tmp}/results", "--checkpoint", "0"]
        t_floor = floor(base, args.backbone, args.device, 256)
        print(f"floor (encode every train+test image once): {t_floor:.2f}s", flush=True)
        t_cold = timed_run(base + ["--feature_cache", f"{tmp}/cache"])[0]
        print(f"with the cache, cold:                       {t_cold:.2f}s", flush=True)
        t_warm = timed_run(base + ["--feature_cache", f"{tmp}/cache"])[0]
        print(f"with the cache, warm:                       {t_warm:.2f}s", flush=True)
        t_off = timed_run(base + ["--feature_cache", "off"])[0]
        print(f"without the cache:                          {t_off:.2f}s", flush=True)
    print(f"cached (cold) / floor = {t_cold / t_floor:.2f} (target <= 1.5); "
          f"uncached / cached (cold) = {t_off / t_cold:.1f} (target >= 5); "
          f"uncached / cached (warm) = {t_off / t_warm:.1f}")


if __name__ == "__main__":
    main()
