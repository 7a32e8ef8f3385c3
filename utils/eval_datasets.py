"""``--eval_datasets`` scored by one function, :func:`score_dataset`: with ``--eval_only`` (each dataset by a
model built on it), and during a training run as extra columns after every task (:class:`ExtraColumns`: the run's
model scores each dataset's classes with its current encoders, as ZSCL's framework evaluates after each task; the
datasets are never trained and never change the training).

Per dataset the accuracy its setting reports: over a task's own classes on task-IL sequences of datasets, over all
its classes otherwise; top-5 where at least 5 classes compete; and the dataset's own metrics (``eval_metrics``:
pm-0 / pm-10, worst-region accuracy, macro F1) from the predictions of its whole test split, after its
``project_logits``.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from utils.errors import UserError
from utils.evaluate import TOP_K
from utils.precision import autocast
from utils.seeding import rng_state, set_rng_state


def task_label(dataset, task: int) -> str:
    names = getattr(dataset, "task_names", None)
    return str(names[task]) if names else f"task{task + 1:02d}"


@torch.no_grad()
def score_dataset(logits_fn: Callable[[Tensor], Tensor], dataset, test_data: dict[int, Any], batch_size: int,
                  label: str, max_batches: int | None = None) -> dict[str, Any]:
    """Score every task of ``dataset`` (``test_data[k]``: its test data as the model takes it) by
    ``logits_fn(inputs) -> logits over all of the dataset's classes``; the entry ``run_eval_only`` records."""
    project = getattr(dataset, "project_logits", None)
    task_il = dataset.SETTING == "task-il"
    tasks: dict[str, dict[str, Any]] = {}
    predictions: list[Tensor] = []
    complete = True
    for k in range(dataset.N_TASKS):
        lo, hi = dataset.get_offsets(k) if task_il else (0, dataset.n_classes)
        correct = correct5 = total = 0
        for i, batch in enumerate(test_data[k].batches(batch_size)):
            if max_batches is not None and i >= max_batches:
                complete = False
                break
            logits = logits_fn(batch["inputs"]).float()
            if project is not None:
                logits = project(logits)
            labels = batch["labels"].to(logits.device)
            scores = logits[:, lo:hi]
            pred = scores.argmax(1) + lo
            correct += int((pred == labels).sum())
            if hi - lo >= TOP_K:
                rank = (scores > scores.gather(1, (labels - lo)[:, None])).sum(1)
                correct5 += int((rank < TOP_K).sum())
            total += labels.numel()
            predictions.append(pred.cpu())
        n = max(total, 1)
        lo_k, hi_k = dataset.get_offsets(k)
        tasks[task_label(dataset, k) if dataset.N_TASKS > 1 else label] = {
            "top1": 100.0 * correct / n, "top5": 100.0 * correct5 / n if hi - lo >= TOP_K else None,
            "n_test": total, "n_classes": hi_k - lo_k}
    values = list(tasks.values())
    weights = [1.0] * len(values) if task_il else [float(v["n_test"]) for v in values]

    def mean(key: str) -> float | None:
        if any(v[key] is None for v in values):
            return None
        return sum(w * v[key] for w, v in zip(weights, values)) / max(sum(weights), 1e-12)
    entry = {"setting": dataset.SETTING, "n_classes": dataset.n_classes, "top1": mean("top1"), "top5": mean("top5"),
             "tasks": tasks}
    metrics = getattr(dataset, "eval_metrics", None)
    if metrics is not None and complete and dataset.N_TASKS == 1:
        entry.update(metrics(torch.cat(predictions).numpy() if predictions else np.zeros(0, dtype=np.int64)))
    return entry


def check_eval_datasets(model_cls, names: list[str]) -> None:
    """Before a training run: every ``--eval_datasets`` name is known and the method can score other datasets."""
    from utils.eval_modes import resolve_eval_dataset
    if not names:
        return
    if not getattr(model_cls, "SCORES_OTHER_DATASETS", False):
        from models import get_model_class, list_models
        able = [m for m in list_models() if getattr(get_model_class(m), "SCORES_OTHER_DATASETS", False)]
        raise UserError(f"--eval_datasets during training needs a method that scores any dataset's classes with its "
                        f"text encoder (the ZSCL family and zero-shot CLIP: {', '.join(able)}); '{model_cls.NAME}' "
                        f"is not one (with --eval_only any method evaluates a --load file)")
    labels = [resolve_eval_dataset(n)[2] for n in names]
    repeated = next((x for x in labels if labels.count(x) > 1), None)
    if repeated:
        raise UserError(f"--eval_datasets: '{repeated}' is listed twice")


class ExtraColumns:
    """``--eval_datasets`` in a training run: each dataset built once (native class order, its own default
    options), seen through the method's own input pipeline, scored after each task by the current model."""

    def __init__(self, model, names: list[str]):
        from utils.eval_modes import resolve_eval_dataset
        self.model = model
        args = replace(model.args, class_order="native")
        self.entries = []
        for name in names:
            cls, tasks, label = resolve_eval_dataset(name)
            dataset = cls(args, tasks=tasks) if tasks else cls(args)
            view = type(model).input_view(dataset, model.clip, args, model.device, model.opts)
            self.entries.append((label, view))
        self._test: dict[str, dict[int, Any]] = {}

    @property
    def labels(self) -> list[str]:
        return [label for label, _ in self.entries]

    def evaluate(self) -> dict[str, dict[str, Any]]:
        """Every dataset's entry, with the model as it is now; every RNG is left as it was found (the run's numbers
        are those without the columns)."""
        model, args = self.model, self.model.args
        state, generator = rng_state(), model.generator.get_state()
        was_training = model.training
        model.eval()
        out = {}
        try:
            for label, view in self.entries:
                if label not in self._test:
                    self._test[label] = {k: view.task_data(k, "test").to(model.device) for k in range(view.N_TASKS)}
                with autocast(model.precision, model.device):
                    classifier = model.zero_shot_weights(dataset=view)
                    out[label] = score_dataset(lambda x: model.other_dataset_logits(x.to(model.device), classifier),
                                               view, self._test[label], args.eval_batch_size, label,
                                               max_batches=3 if args.debug_mode else None)
        finally:
            model.train(was_training)
            set_rng_state(state)
            model.generator.set_state(generator)
        return out
