"""CLAP4CLIP's experience replay, shared by ``clap4clip`` and ``clip-adapter`` (``--replay append|batch``).

The original (``dataset/incremental_dataloader.py``, ``get_same_index``) appends the memory's items to the
task's training set, so an epoch is ``ceil((task + memory) / batch)`` shuffled steps of ``batch`` items: 219
steps of 32 per epoch on CIFAR-100 with 5000 task images and a 2000-image memory. ``--replay append`` (the
default) does the same through the task loop's ``training_data`` hook; ``--replay batch`` is the earlier Tusk
way, one replay batch of ``ceil(batch x memory / task)`` items after every stream batch (157 steps of 32 + 13).
After each task but the first, ``finetune_on_memory`` trains on the memory alone (class-balanced finetuning),
its items drawn like training items (an augmented view, e.g. a flip), at lr/10 with a cosine and no warm-up.

The memory must be class-balanced (``--buffer_mode balanced``, as the original's exemplar memory) and stores
the items' positions in the training split (``indexes``), from which the appended items are re-read with all
their cached views.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from tqdm.auto import tqdm

from datasets.utils.task_data import LoaderTaskData, concat_task_data
from utils.buffer import ClassBalancedBuffer
from utils.errors import UserError
from utils.optimizers import make_optimizer
from utils.schedulers import warmup_cosine

REPLAY_MODES = ("append", "batch")


def train_items(dataset, like, positions: Tensor):
    """The training-split items at ``positions``, as task data of the same kind as ``like`` (its augmentation,
    normalisation and, for cached features, every view)."""
    images, labels = dataset.split("train")
    pos = positions.long().to(labels.device)
    if isinstance(like, LoaderTaskData):
        return LoaderTaskData(like.source, labels[pos], pos, like.train_tf, like.test_tf, like.normalize,
                              like.num_workers)
    return type(like)(images[pos.to(images.device)], labels[pos], pos, like.augment, like.normalize)


class MemoryReplay:
    """Mixin for a method with ``opts.replay`` (list it before the ContinualModel base)."""

    def check_replay(self) -> None:
        if self.appends_memory() and not isinstance(self.buffer, ClassBalancedBuffer):
            raise UserError(f"{self.NAME} --replay append appends a class-balanced memory to each task's data: use "
                            f"--buffer_mode balanced (or --replay batch for a reservoir memory)")

    def appends_memory(self) -> bool:
        return self.buffer is not None and self.opts.replay == "append"

    def training_data(self, data):
        """The task's data, followed by the memory's items with ``--replay append`` (the original's ER)."""
        self._train_like = data
        if not self.appends_memory() or self.buffer.is_empty():
            return data
        return concat_task_data([data, self.memory_data(data)])

    def memory_data(self, like):
        return train_items(self.dataset, like, self.buffer.get_all()["indexes"]).to(self.device)

    def stream_and_replay(self, inputs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """The training batch (memory items already inside it with ``--replay append``), else stream + replay."""
        return (inputs, labels) if self.appends_memory() else self.with_replay(inputs, labels)

    def finetune_on_memory(self, params, lr: float, epochs: int, loss_fn) -> None:
        """Class-balanced finetuning: ``epochs`` over the memory alone, shuffled, SGD at ``lr`` (the run's momentum
        and weight decay) with a per-step cosine to lr/1000 and no warm-up; ``loss_fn(inputs, labels)``."""
        like = getattr(self, "_train_like", None) or self.dataset.task_data(self.current_task, "train")
        memory = self.memory_data(like)
        a, bs = self.args, self.args.batch_size
        optimizer = make_optimizer("sgd", params, lr, momentum=a.optim_mom, weight_decay=a.optim_wd)
        steps = math.ceil(len(memory) / bs)
        scheduler = warmup_cosine(optimizer, steps * epochs, 0.0)
        bar = tqdm(total=steps * epochs, desc="finetune on memory", leave=False, disable=a.quiet)
        for _ in range(epochs):
            for batch in memory.batches(bs, shuffle=True, generator=self.generator, train=True):
                optimizer.zero_grad()
                loss = loss_fn(batch["inputs"].to(self.device), batch["labels"].to(self.device))
                self.step(loss, optimizer)              # through the fp16 grad scaler (end_task runs in autocast)
                scheduler.step()
                bar.update()
        bar.close()
