"""Evaluation after a task: class-IL and task-IL accuracy on every task that counts."""
from __future__ import annotations

from typing import Sequence

import torch
from tqdm.auto import tqdm

from datasets.utils.task_data import TensorTaskData


@torch.no_grad()
def evaluate(model, dataset, test_data: Sequence[TensorTaskData], trained_task: int, tasks: Sequence[int],
             batch_size: int, quiet: bool = True, max_batches: int | None = None
             ) -> tuple[list[float], list[float]]:
    """Accuracies (percent) on ``tasks`` after training ``trained_task``.

    - class-IL: argmax over every class seen so far; for a future task ``k`` (``--eval_future``),
      over the classes of tasks ``0..k``, i.e. as if that task were the newest;
    - task-IL: argmax over the classes of task ``k`` only (the task identity is given).
    """
    was_training = model.training
    model.eval()
    cil, til = [], []
    bar = tqdm(total=sum(test_data[k].num_batches(batch_size) for k in tasks), desc="evaluate",
               leave=False, disable=quiet)
    for k in tasks:
        n_visible = dataset.get_offsets(max(trained_task, k))[1]
        lo, hi = dataset.get_offsets(k)
        correct_c = correct_t = total = 0
        for i, batch in enumerate(test_data[k].batches(batch_size)):
            if max_batches is not None and i >= max_batches:
                break
            logits = model(batch["inputs"].to(model.device))
            labels = batch["labels"].to(model.device)
            correct_c += (logits[:, :n_visible].argmax(1) == labels).sum().item()
            correct_t += (logits[:, lo:hi].argmax(1) + lo == labels).sum().item()
            total += labels.numel()
            bar.update()
        cil.append(100.0 * correct_c / max(total, 1))
        til.append(100.0 * correct_t / max(total, 1))
    bar.close()
    model.train(was_training)
    return cil, til
