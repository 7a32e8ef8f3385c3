"""How much does the harness cost? ``sgd`` on ``seq-synth`` through Tusk vs a bare PyTorch loop.

Both do the same work: generate the benchmark, train the same network with the same optimizer,
augmentation, batch size and epochs on each task, and evaluate class-IL accuracy on every seen task
after each task. The harness additionally writes its run directory, logs and a checkpoint per task.
Runs alternate (harness, bare, harness, bare, ...) and the best time of each is compared.

    python scripts/bench_loop_overhead.py [--repeats 3] [--n_epochs 1] [--backbone small-cnn]

Target: harness / bare <= 1.10.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backbone import create_backbone  # noqa: E402
from datasets.seq_synth import SequentialSynth  # noqa: E402
from utils.config import parse_config  # noqa: E402
from utils.seeding import seed_everything  # noqa: E402
from bench_timing import timed_run  # noqa: E402


def harness(argv: list[str], results: str) -> float:
    return timed_run(argv + ["--results_path", results, "--quiet", "1"])[0]


def bare(argv: list[str]) -> float:
    """The same experiment written as a plain loop, with nothing but the work itself."""
    config, _ = parse_config(argv)
    a = config.run
    start = time.perf_counter()
    seed_everything(a.seed)
    ds = SequentialSynth(a, config.data)
    net = create_backbone(config.backbone, ds.n_classes, config.net)
    train_x, train_y = ds.split("train")
    test_x, test_y = ds.split("test")
    gen = torch.Generator().manual_seed(a.seed)
    augment = ds.train_augmentation()
    for task in range(ds.N_TASKS):
        lo, hi = ds.get_offsets(task)
        idx = torch.nonzero((train_y >= lo) & (train_y < hi)).flatten()
        x_task, y_task = train_x[idx], train_y[idx]
        opt = torch.optim.SGD(net.parameters(), lr=a.lr)
        net.train()
        for _ in range(a.n_epochs):
            perm = torch.randperm(len(y_task), generator=gen)
            for s in range(0, len(perm), a.batch_size):
                b = perm[s:s + a.batch_size]
                x = ds.normalize(augment(x_task[b].float().div_(255), gen))
                opt.zero_grad()
                loss = F.cross_entropy(net(x), y_task[b])
                loss.backward()
                opt.step()
                loss.item()
        net.eval()
        with torch.no_grad():
            for k in range(task + 1):
                klo, khi = ds.get_offsets(k)
                tidx = torch.nonzero((test_y >= klo) & (test_y < khi)).flatten()
                correct = 0
                for s in range(0, len(tidx), a.eval_batch_size):
                    b = tidx[s:s + a.eval_batch_size]
                    logits = net(ds.normalize(test_x[b].float().div_(255)))
                    correct += (logits[:, :hi].argmax(1) == test_y[b]).sum().item()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--n_epochs", type=int, default=1)
    p.add_argument("--backbone", default="small-cnn")
    args = p.parse_args()
    argv = ["--model", "sgd", "--dataset", "seq-synth", "--seed", "0", "--device", "cpu",
            "--n_epochs", str(args.n_epochs), "--backbone", args.backbone]
    times: dict[str, list[float]] = {"harness": [], "bare": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            times["harness"].append(harness(argv, tmp))
            times["bare"].append(bare(argv))
            print(f"repeat {r + 1}: harness {times['harness'][-1]:.2f}s  bare {times['bare'][-1]:.2f}s", flush=True)
    h, b = min(times["harness"]), min(times["bare"])
    print(f"best of {args.repeats}: harness {h:.2f}s  bare {b:.2f}s  ratio harness/bare = {h / b:.3f} "
          f"(target <= 1.10)")


if __name__ == "__main__":
    main()
