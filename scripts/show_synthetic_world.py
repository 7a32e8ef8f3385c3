"""Preview the synthetic world and measure its rendering speed.

Writes a PNG grid (rows = concepts, columns = the four domains twice) upscaled
with nearest-neighbour so the 32x32 images are inspectable, and prints the
single-thread rendering throughput, the number that matters for data loading.

Usage: python scripts/show_synthetic_world.py [--out grid.png] [--seed 0]
"""

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F
from torchvision.utils import save_image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets.utils.synthetic_world import ALL_DOMAINS as DOMAINS, SyntheticWorld  # noqa: E402


def preview_concepts(world: SyntheticWorld, rows: int) -> list[int]:
    """Concepts that walk through every colour, texture and shape."""
    n_t, n_s = 4, 10
    return [world.concepts[(i % 10) * n_t * n_s + (i % n_t) * n_s + (i * 3 + i // 10) % n_s].index
            for i in range(rows)]


def throughput(world: SyntheticWorld, n: int, batch: int) -> float:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(len(world.concepts), (n,), generator=generator)
    world.render(ids[:batch], generator)  # warm-up
    start = time.perf_counter()
    for i in range(0, n, batch):
        world.render(ids[i:i + batch], generator)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="grid.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2, help="samples per domain")
    parser.add_argument("--zoom", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=32)
    args = parser.parse_args()

    torch.set_num_threads(1)
    world = SyntheticWorld(seed=args.seed, image_size=args.image_size)
    concepts = preview_concepts(world, args.rows)
    cols = len(DOMAINS) * args.repeats
    ids = torch.tensor(concepts).repeat_interleave(cols)
    domains = torch.arange(cols).remainder(len(DOMAINS)).repeat(len(concepts))
    images = world.render(ids, torch.Generator().manual_seed(args.seed), domains)
    images = F.interpolate(images.float() / 255, scale_factor=args.zoom, mode="nearest")
    save_image(images, args.out, nrow=cols, padding=2, pad_value=1.0)
    print(f"wrote {args.out}: rows = {', '.join(world.concepts[c].name for c in concepts)}")
    print(f"columns cycle through domains: {', '.join(DOMAINS)}")

    rate = throughput(world, n=20000, batch=1024)
    print(f"throughput: {rate:,.0f} images/s at {args.image_size}x{args.image_size}, 1 thread")


if __name__ == "__main__":
    main()
