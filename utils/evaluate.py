"""Evaluation after a task: class-IL and task-IL accuracy on every task that counts, top-5 accuracy,
calibration over the seen test set and novel-data detection scores (``utils/metrics.py`` defines them)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from datasets.utils.task_data import TensorTaskData
from utils import distributed, metrics

TOP_K = 5


@dataclass
class StepEvaluation:
    """What one evaluation measured; the dicts map a task index to its value (percent)."""
    class_il: dict[int, float]
    task_il: dict[int, float]
    sizes: dict[int, int]                         # test images evaluated per task
    top5: dict[str, dict[int, float]] = field(default_factory=dict)   # only tasks with >= 5 candidate classes
    calibration: dict[str, Any] | None = None     # reliability-diagram bins and ECE over the seen test set
    novelty: dict[str, Any] | None = None         # {score: {auroc, aupr, fpr95}}, n_in, n_novel

    def extras(self) -> dict[str, Any]:
        """The plain-Python fields ``RunRecorder.add_row`` stores besides the accuracies."""
        return {"sizes": self.sizes, "top5": self.top5, "calibration": self.calibration, "novelty": self.novelty}


def _label_rank(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """How many classes score strictly higher than the true one (top-k correct iff rank < k)."""
    return (logits > logits.gather(1, labels[:, None])).sum(1)


@torch.no_grad()
def evaluate_step(model, dataset, test_data: Mapping[int, TensorTaskData] | Sequence[TensorTaskData],
                  trained_task: int, tasks: Sequence[int], batch_size: int, *, calibration: bool = False,
                  novel_tasks: Sequence[int] = (), quiet: bool = True, max_batches: int | None = None,
                  ece_per_batch: bool = False) -> StepEvaluation:
    """Evaluate after training ``trained_task`` (``-1``: before any training).

    - accuracy on ``tasks``: class-IL = argmax over every class seen so far (for a future task ``k``,
      ``--eval_future``, over the classes of tasks ``0..k``, as if it were the newest); task-IL = argmax over
      task ``k``'s classes only; top-5 likewise where there are at least 5 candidate classes;
    - ``calibration``: max-softmax confidence over the seen classes and class-IL correctness of every seen
      test image, binned once over the whole seen test set; its ``ece`` is that set's (torchmetrics' binning),
      or with ``ece_per_batch`` CLAP4CLIP's mean of per-batch values over the seen tasks' batches;
    - ``novel_tasks`` (future tasks, ``--eval_ood``): in-distribution = seen tasks, novel = these, both
      scored over the seen classes only (and, if ``model.forward_samples`` gives them, Monte-Carlo samples).
    Without ``novel_tasks`` only per-image confidences and correctness leave the device; with them, each
    batch's seen-class logits are scored on the CPU and only the scores are kept.

    Batches hold one task's test images, in split order; a model whose predictions depend on the rest of the
    batch (``model.shuffled_eval_batches``, CLAP's ``--vga_context batch``) gets each task's images shuffled
    once, by ``--seed`` and the task, as the original's test loaders were.
    """
    was_training = model.training
    model.eval()
    n_seen = dataset.get_offsets(trained_task)[1] if trained_task >= 0 else 0
    novel = set(novel_tasks) if n_seen else set()
    order = sorted(set(tasks) | novel)
    sampler = getattr(model, "forward_samples", None)
    cil, til, sizes, top5_c, top5_t = {}, {}, {}, {}, {}
    conf, hits, batch_sizes = [], [], []
    shuffled = bool(getattr(model, "shuffled_eval_batches", False))
    scores: dict[bool, list[dict[str, np.ndarray]]] = {True: [], False: []}    # in-distribution?
    bar = tqdm(total=sum(test_data[k].num_batches(batch_size) for k in order), desc="evaluate",
               leave=False, disable=quiet or not distributed.is_main())
    world, rank = distributed.world_size(), distributed.rank()     # DDP: rank r scores batches r, r + N, ...
    for k in order:
        n_visible = dataset.get_offsets(max(trained_task, k))[1]
        lo, hi = dataset.get_offsets(k)
        wants_acc, wants_scores = k in tasks, bool(novel) and (k <= trained_task or k in novel)
        correct_c = correct_t = correct_c5 = correct_t5 = total = 0
        order_gen = torch.Generator().manual_seed(model.args.seed * 1000 + k) if shuffled else None  # fixed per task
        for i, batch in enumerate(test_data[k].batches(batch_size, shuffle=shuffled, generator=order_gen)):
            if max_batches is not None and i >= max_batches:
                break
            if i % world != rank:
                bar.update()
                continue
            x = batch["inputs"].to(model.device)
            logits = model(x).float()
            labels = batch["labels"].to(model.device)
            if wants_acc:
                hit_c = logits[:, :n_visible].argmax(1) == labels
                correct_c += hit_c.sum()
                correct_t += (logits[:, lo:hi].argmax(1) + lo == labels).sum()
                if n_visible >= TOP_K:
                    correct_c5 += (_label_rank(logits[:, :n_visible], labels) < TOP_K).sum()
                if hi - lo >= TOP_K:
                    correct_t5 += (_label_rank(logits[:, lo:hi], labels - lo) < TOP_K).sum()
                total += labels.numel()
                if calibration and k <= trained_task:
                    conf.append(logits[:, :n_seen].softmax(1).amax(1))
                    hits.append(hit_c)
                    batch_sizes.append(labels.numel())
            if wants_scores:
                samples = sampler(x) if sampler is not None else None
                scores[k <= trained_task].append(metrics.novelty_scores(
                    logits[:, :n_seen].cpu().numpy(),
                    None if samples is None else samples[..., :n_seen].float().cpu().numpy()))
            bar.update()
        if wants_acc and world > 1:
            correct_c, correct_t, correct_c5, correct_t5, total = (int(v) for v in distributed.all_sum(
                [float(correct_c), float(correct_t), float(correct_c5), float(correct_t5), float(total)]))
        if wants_acc:
            n = max(total, 1)
            cil[k], til[k], sizes[k] = 100.0 * int(correct_c) / n, 100.0 * int(correct_t) / n, total
            if n_visible >= TOP_K:
                top5_c[k] = 100.0 * int(correct_c5) / n
            if hi - lo >= TOP_K:
                top5_t[k] = 100.0 * int(correct_t5) / n
    bar.close()
    model.train(was_training)
    result = StepEvaluation(cil, til, sizes, {"class_il": top5_c, "task_il": top5_t})
    if world > 1:        # DDP: every rank's per-image confidences and novelty scores, in rank order
        parts = distributed.gather_objects((torch.cat(conf).cpu() if conf else None,
                                            torch.cat(hits).cpu() if hits else None, batch_sizes, scores))
        conf = [p[0] for p in parts if p[0] is not None]
        hits = [p[1] for p in parts if p[1] is not None]
        batch_sizes = [n for p in parts for n in p[2]]
        scores = {side: [s for p in parts for s in p[3][side]] for side in (True, False)}
    if conf:
        confidences, correct = torch.cat(conf).cpu().numpy(), torch.cat(hits).cpu().numpy()
        diagram = metrics.reliability_diagram(confidences, correct)
        ece = metrics.mean_batch_ece(confidences, correct, batch_sizes) if ece_per_batch \
            else metrics.ece_from_diagram(diagram)
        result.calibration = {"ece": ece, "ece_mode": "per_batch" if ece_per_batch else "dataset",
                              **{key: diagram[key].tolist() for key in ("counts", "accuracy", "confidence")}}
    if scores[True] and scores[False]:
        joined = {side: {name: np.concatenate([s[name] for s in parts]) for name in parts[0]}
                  for side, parts in scores.items()}
        result.novelty = {"n_in": int(joined[True]["energy"].size), "n_novel": int(joined[False]["energy"].size),
                          **metrics.novelty_detection(joined[True], joined[False])}
    return result

