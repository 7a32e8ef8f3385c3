"""Fine-tune CLIP on ONE dataset of synth-mtil, alone, and print its task-IL test accuracy before and after.

What a sequence hides: how well a method learns each dataset when nothing came before it. It builds `synth-mtil`
with that dataset only and runs the method's own training step (``meta_observe``) for ``--n_iters`` steps with the
run's scheduler, as the task loop would, then evaluates with the method's classifier (the template ensemble).

Usage: python scripts/finetune_single_dataset.py counting [main.py flags, e.g. --train_mode fc --lr 1.0]
(the flags default to ``--model finetune --dataset synth-mtil --model_config best``.)
"""
from __future__ import annotations

import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets.synth_mtil import SynthMTIL  # noqa: E402
from datasets.utils.synthetic_tasks import SYNTH_TASKS  # noqa: E402
from models import get_model_class  # noqa: E402
from utils.config import parse_config  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.seeding import seed_everything  # noqa: E402


@torch.no_grad()
def accuracy(model, data) -> float:
    model.eval()
    correct = total = 0
    for batch in data.batches(256):
        correct += (model(batch["inputs"]).argmax(1) == batch["labels"]).sum().item()
        total += len(batch["labels"])
    return 100 * correct / total


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in SYNTH_TASKS:
        print(f"usage: finetune_single_dataset.py DATASET [flags]; DATASET is one of {', '.join(sorted(SYNTH_TASKS))}",
              file=sys.stderr)
        return 2
    name, flags = argv[0], argv[1:]
    defaults = [] if "--model" in flags else ["--model", "finetune"]
    defaults += [] if "--model_config" in flags else ["--model_config", "best"]
    try:
        config, _ = parse_config([*defaults, "--dataset", "synth-mtil", "--quiet", "1", *flags])
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    seed_everything(config.run.seed)
    dataset = SynthMTIL(config.run, config.data, tasks=[name])
    cls = get_model_class(config.model)
    backbone = cls.create_backbone(config.backbone, dataset, config.net)
    view = cls.input_view(dataset, backbone, config.run, torch.device("cpu"), config.method)
    model = cls(backbone, view, config.run, config.method, "cpu")
    before = accuracy(model, view.task_data(0, "test"))
    args = config.run
    data = model.training_data(view.task_data([0], "train"))
    per_epoch = data.num_batches(args.batch_size)
    total = args.n_iters if args.n_iters is not None else per_epoch * args.n_epochs
    model.meta_begin_task(view, per_epoch, math.ceil(total / per_epoch))
    model.train()
    generator, step = torch.Generator().manual_seed(args.seed), 0
    while step < total:
        for batch in data.batches(args.batch_size, shuffle=True, generator=generator, train=True):
            if step >= total:
                break
            model.meta_observe(batch, step // per_epoch)
            if model.scheduler is not None and model.scheduler_mode == "iter":
                model.scheduler.step()
            step += 1
    model.meta_end_task(view)
    print(f"{name}: {' '.join(flags) or '(recipe)'}: before {before:.1f} %, after {total} steps "
          f"{accuracy(model, view.task_data(0, 'test')):.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
