"""What a ZSCL training step costs next to a finetune step (the target: at most 1.5 x).

Both models are built in this process on the same data (``synth-mtil`` and micro-clip unless told otherwise),
with the same batch size and train mode; after one untimed step each (ZSCL's first step encodes the teacher's
features of the reference images and sentences, once), their steps are timed alternately, so that load from other
jobs on the machine falls on both alike. Reported: the mean and median seconds per step of each, their ratio,
and what ZSCL's teacher would cost per step without the cache (the anchor re-encodes the reference batch and every
sentence at every step), measured the same way.

    python scripts/bench_zscl.py [--steps 20] [--batch_size 64] [--device cpu] [--backbone micro-clip]
                                 [--random_weights 1] [-- extra main.py flags for both models]

``--random_weights 1`` builds the backbone without its pretrained weights (nothing is downloaded; a step costs the
same), e.g. ``--backbone ViT-B/16 --device cuda`` for the real model's step time.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from backbone.clip import create_clip  # noqa: E402
from datasets import get_dataset_class  # noqa: E402
from models import get_model_class  # noqa: E402
from utils.config import parse_config  # noqa: E402
from utils.experiment import resolve_device  # noqa: E402
from utils.precision import autocast  # noqa: E402


def build(model: str, argv: list[str], random_weights: bool, dataset=None):
    """(the model's view of the data, the model, the dataset), as ``utils.experiment`` builds them."""
    config, _ = parse_config(["--model", model, *argv])
    dataset = dataset or get_dataset_class(config.dataset)(config.run, config.data)
    cls = get_model_class(model)
    backbone = create_clip(config.backbone, config.net, weights=False) if random_weights else \
        cls.create_backbone(config.backbone, dataset, config.net)
    device = resolve_device(config.run.device)
    view = cls.input_view(dataset, backbone, config.run, device, config.method)
    return view, cls(backbone, view, config.run, config.method, device), dataset


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20, help="timed steps of each model")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dataset", default="synth-mtil")
    p.add_argument("--backbone", default="micro-clip")
    p.add_argument("--random_weights", type=int, default=0)
    p.add_argument("extra", nargs="*", help="more main.py flags for both models, after --")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        common = ["--dataset", args.dataset, "--backbone", args.backbone, "--seed", "0", "--batch_size",
                  str(args.batch_size), "--device", args.device, "--quiet", "1", "--lr", "1e-5",
                  "--feature_cache", f"{tmp}/cache", *args.extra]
        view_ft, finetune, dataset = build("finetune", common, bool(args.random_weights))
        view_z, zscl, _ = build("zscl", common, bool(args.random_weights), dataset)
        device = zscl.device
        data = view_ft.task_data(0, "train").to(device)
        n = min(data.num_batches(args.batch_size), args.steps + 1)
        generator = torch.Generator().manual_seed(0)
        batches = [{k: v.to(device) for k, v in b.items()} for _, b in
                   zip(range(n), data.batches(args.batch_size, shuffle=True, generator=generator, train=True))]
        times: dict[str, list[float]] = {"finetune": [], "zscl": []}
        for name, model, view in (("finetune", finetune, view_ft), ("zscl", zscl, view_z)):
            model.meta_begin_task(view, args.steps + 1, 1)
            model.train()
            with autocast(model.precision, device):
                first = timed(lambda: model.meta_observe(batches[0], 0), device)
            print(f"{name}: first step {first:.2f}s (ZSCL's encodes the teacher's reference features once)", flush=True)
        for i in range(args.steps):
            batch = batches[1 + i % (len(batches) - 1)] if len(batches) > 1 else batches[0]
            for name, model in (("finetune", finetune), ("zscl", zscl)):
                with autocast(model.precision, device):
                    times[name].append(timed(lambda: model.meta_observe(batch, 0), device))

        # what the anchor's teacher adds per step: the reference batch and every sentence, re-encoded
        ref = next(zscl.ref_images.batches(args.batch_size)).images.to(device)
        tokens = zscl.reference_tokens().to(device)
        with torch.no_grad(), autocast(zscl.precision, device):
            teacher_images = statistics.median(
                timed(lambda: zscl.teacher.net.encode_image(zscl.clip.preprocess(ref)), device) for _ in range(3))
            teacher_text = statistics.median(timed(lambda: [zscl.teacher.net.encode_text(tokens[i:i + 1024])
                                                            for i in range(0, len(tokens), 1024)], device)
                                             for _ in range(2))

    ft, zs = statistics.mean(times["finetune"]), statistics.mean(times["zscl"])
    print(f"\n{args.backbone} on {args.dataset}, batch {args.batch_size}, {args.device}, {args.steps} steps each "
          f"({len(zscl.ref_sentences)} reference sentences, {len(zscl.ref_images)} reference images)")
    for name in ("finetune", "zscl"):
        t = times[name]
        print(f"  {name:9s} {statistics.mean(t) * 1000:8.1f} ms/step (median {statistics.median(t) * 1000:.1f})")
    print(f"  ZSCL / finetune per step: {zs / ft:.2f} x (median {statistics.median(times['zscl']) / statistics.median(times['finetune']):.2f} x; target <= 1.5)")
    anchor = zs + teacher_images + teacher_text
    print(f"  without the teacher cache (the anchor re-encodes {len(ref)} reference images and every sentence each "
          f"step): +{teacher_images * 1000:.1f} + {teacher_text * 1000:.1f} ms -> {anchor / ft:.2f} x finetune")


if __name__ == "__main__":
    main()
