"""Build ``micro-clip``: pretrain a tiny open_clip CLIP on the synthetic world's pretraining concepts.

Deterministic from ``--seed`` on CPU (same machine, same torch: same bytes), a few minutes on two
cores. Images of the 300 pretraining concepts (never ``seq-synth``'s 100 classes) are rendered on
the fly by ``SyntheticWorld(seed)`` in its four pretraining domains (one object, or 2-3 copies with a counting
caption), each with a caption from ``world.caption_and_naming`` (random phrasing with its domain word,
random partial naming). Each batch holds distinct concepts when it can, and a caption's positives are
every image it is true of (``world.caption_matches``); the loss is CLIP's symmetric InfoNCE with
multi-positive targets and the learnable, clamped logit scale; AdamW with
linear warmup and cosine decay. At the end the script prints the zero-shot top-1 accuracy on the
``seq-synth`` test set (100 unseen classes x 50 images, the 7 prompt templates, template-mean
classifier, logit scale 100) and the sha256 of the written fp16 state dict (written atomically).

Usage: python scripts/build_micro_clip.py --seed 0 --out backbone/weights/micro_clip.pt

``--config FILE`` builds another size (open_clip's JSON format, e.g. ``scripts/micro_clip_configs/wide.json``)
for scaling studies; the config is written beside the weights (``x.pt`` -> ``x.json``), where
``--pretrained x.pt`` finds it. The shipped file is always the default config.
"""
from __future__ import annotations

import argparse
import io
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbone.micro_clip import (  # noqa: E402
    MICRO_CLIP_CONFIG, WEIGHTS_PATH, build_micro_clip_model, config_path_for, create_micro_clip, file_sha256,
    load_micro_clip_config, micro_clip_tokenizer, preprocess, zero_shot_accuracy,
)
from utils.atomic import write_json  # noqa: E402
from utils.errors import UserError  # noqa: E402
from datasets.utils.synthetic_world import (  # noqa: E402
    BENCHMARK_DOMAINS, DOMAINS, MAX_PRETRAIN_COUNT, TEMPLATES, SyntheticWorld,
)

DEFAULT_STEPS = 1500
DEFAULT_BATCH_SIZE = 128
#: share of pretraining images that show several copies of their concept ("two red circles")
GROUP_FRACTION = 0.2


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seed", type=int, default=0, help="seed of the world's images and of training")
    p.add_argument("--out", type=Path, default=Path("backbone/weights/micro_clip.pt"), help="output file")
    p.add_argument("--config", type=Path, default=None,
                   help="open_clip-format JSON of another micro-clip size (default: MICRO_CLIP_CONFIG)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="optimizer steps")
    p.add_argument("--batch_size", type=int, default=DEFAULT_BATCH_SIZE,
                   help="images per step (distinct concepts while it is <= 300)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate")
    p.add_argument("--weight_decay", type=float, default=0.1, help="AdamW weight decay (matrices only)")
    p.add_argument("--warmup", type=float, default=0.1, help="fraction of the steps spent in linear warmup")
    p.add_argument("--threads", type=int, default=2,
                   help="torch CPU threads (part of the recipe: another count changes the last bits)")
    p.add_argument("--log_every", type=int, default=25, help="print progress every N steps")
    args = p.parse_args(argv)
    for name, low in (("steps", 1), ("batch_size", 2), ("threads", 1), ("log_every", 0)):
        if getattr(args, name) < low:
            p.error(f"--{name} must be >= {low}, got {getattr(args, name)}")
    return args


class CaptionTokens:
    """Tokenises captions once each (there are only 300 x 4 x 6 distinct ones)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.cache = tokenizer, {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        missing = [c for c in dict.fromkeys(captions) if c not in self.cache]
        if missing:
            self.cache.update(zip(missing, self.tokenizer(missing)))
        return torch.stack([self.cache[c] for c in captions])


def sample_batch(world: SyntheticWorld, concepts: torch.Tensor, batch_size: int, generator: torch.Generator,
                 tokens: CaptionTokens) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (uint8), caption tokens and the positives matrix of one batch (concepts distinct when possible).

    A fraction ``GROUP_FRACTION`` of the images shows 2..MAX_PRETRAIN_COUNT copies of its concept, captioned
    with the number. ``positive[i, j]`` says whether caption ``i`` is true of image ``j``: captions name a
    random subset of the attributes (alt-text rarely names everything), so "a red circle" is also true of
    every other red circle in the batch, whatever its texture, as long as the count agrees.
    """
    n = concepts.numel()
    picks = [torch.randperm(n, generator=generator) for _ in range(math.ceil(batch_size / n))]
    ids = concepts[torch.cat(picks)[:batch_size]]
    domains = torch.randint(len(DOMAINS), (batch_size,), generator=generator)
    counts = torch.ones(batch_size, dtype=torch.long)
    grouped = torch.rand(batch_size, generator=generator) < GROUP_FRACTION
    counts[grouped] = torch.randint(2, MAX_PRETRAIN_COUNT + 1, (int(grouped.sum()),), generator=generator)
    images = world.render(ids, generator, domains)
    if grouped.any():
        images[grouped] = world.render_group(ids[grouped], counts[grouped], generator, domains[grouped])
    captions, namings = [], []
    for c, d, k in zip(ids.tolist(), domains.tolist(), counts.tolist()):
        caption, naming = world.caption_and_naming(c, d, generator, count=k)
        captions.append(caption)
        namings.append(naming)
    positive = torch.stack([world.caption_matches(m, ids[i], ids) for i, m in enumerate(namings)])
    positive &= counts[:, None] == counts[None, :]
    return images, tokens(captions), positive


def clip_loss(image_features, text_features, logit_scale, positive):
    """Symmetric InfoNCE with multi-positive targets: ``positive[i, j]`` = caption i is true of image j."""
    logits = logit_scale * text_features @ image_features.T   # (captions, images)
    p = positive.float()
    text_to_image = torch.sum(-(p / p.sum(1, keepdim=True)) * F.log_softmax(logits, 1), 1).mean()
    image_to_text = torch.sum(-(p.T / p.T.sum(1, keepdim=True)) * F.log_softmax(logits.T, 1), 1).mean()
    return 0.5 * (text_to_image + image_to_text)


def param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.ndim < 2 or "embedding" in name or "logit_scale" in name or name == "visual.class_embedding":
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def train(config: dict | None = None, seed: int = 0, steps: int = DEFAULT_STEPS, batch_size: int = DEFAULT_BATCH_SIZE,
          lr: float = 2e-3, weight_decay: float = 0.1, warmup: float = 0.1, log_every: int = 25, log=print):
    """Train a micro-clip from scratch; returns the model (float32, eval mode)."""
    torch.manual_seed(seed)
    world = SyntheticWorld(seed=seed)
    concepts = torch.tensor(world.pretrain_concepts())
    generator = torch.Generator().manual_seed(seed)
    model = build_micro_clip_model(config).train()
    tokens = CaptionTokens(micro_clip_tokenizer(model.context_length))
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6,
                                  fused=True)
    warmup_steps = max(1, int(warmup * steps))
    start, running = time.perf_counter(), None
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup_steps)
        images, text, positive = sample_batch(world, concepts, batch_size, generator, tokens)
        image_features, text_features, logit_scale = model(preprocess(images), text)
        loss = clip_loss(image_features, text_features, logit_scale, positive)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
        if log_every and ((step + 1) % log_every == 0 or step + 1 == steps):
            log(f"step {step + 1:4d}/{steps}  loss {running:.3f}  logit scale "
                f"{model.logit_scale.exp().item():5.1f}  {time.perf_counter() - start:6.1f} s")
    return model.eval()


def seq_synth_zero_shot(model, seed: int = 0, n_per_class: int = 50, domains=BENCHMARK_DOMAINS) -> float:
    """Zero-shot top-1 (fraction) on seq-synth's test split: 100 classes x n_per_class images."""
    world = SyntheticWorld(seed=seed)
    bench = world.benchmark_concepts()
    images, labels, _ = world.make_split(bench, n_per_class, "test", domains=domains)
    names = [world.concepts[i].name for i in bench]
    return zero_shot_accuracy(model, micro_clip_tokenizer(model.context_length), images, labels, names, TEMPLATES)


def save_weights(model, out: Path) -> str:
    """Write the fp16 state dict atomically (temporary file + rename); returns its sha256.

    Serialised through memory so the zip archive's internal folder name is always "archive"
    (``torch.save`` to a path names it after the file), which keeps the bytes reproducible.
    """
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buffer.getvalue())
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the weights are for everyone
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return file_sha256(out)


def main(argv=None) -> None:
    args = parse_args(argv)
    config = MICRO_CLIP_CONFIG
    try:
        if args.config is not None:
            config = load_micro_clip_config(args.config)
            if args.out.resolve() == WEIGHTS_PATH and config != MICRO_CLIP_CONFIG:
                raise UserError(f"--config: {WEIGHTS_PATH} is the shipped default-size micro-clip; "
                                f"write another size elsewhere with --out")
    except UserError as exc:
        sys.exit(f"build_micro_clip.py: error: {exc}")
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = False  # a NaN-fill per op costs ~10 % here
    start = time.perf_counter()
    print(f"micro-clip: seed {args.seed}, {args.steps} steps x batch {args.batch_size}, "
          f"{args.threads} threads, config {config}", flush=True)
    model = train(config=config, seed=args.seed, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                  weight_decay=args.weight_decay, warmup=args.warmup, log_every=args.log_every,
                  log=lambda s: print(s, flush=True))
    n_params = sum(p.numel() for p in model.parameters())
    train_seconds = time.perf_counter() - start
    if args.out.resolve() != WEIGHTS_PATH:  # the architecture travels with any other checkpoint
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(config_path_for(args.out), config)
    sha = save_weights(model, args.out)
    # Evaluate the weights as shipped (fp16 round trip), exactly what create_micro_clip() loads.
    shipped = create_micro_clip(args.out)
    acc = seq_synth_zero_shot(shipped, seed=0)
    acc_seen = seq_synth_zero_shot(shipped, seed=0, domains=DOMAINS)
    print(f"parameters: {n_params:,}; training {train_seconds:.1f} s; total {time.perf_counter() - start:.1f} s")
    print(f"zero-shot top-1 on seq-synth test (100 unseen classes x 50 images): {100 * acc:.2f} % "
          f"(chance 1.00 %); on its pretraining domains only: {100 * acc_seen:.2f} %")
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.2f} MiB)")
    print(f"sha256 {sha}")


if __name__ == "__main__":
    main()
