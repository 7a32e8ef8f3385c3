"""The one task loop: for each task, begin, train, end, evaluate, record, checkpoint.

Owned here and nowhere else: the data order (one seeded generator), stepping the learning-rate
scheduler (every epoch or iteration, as the model's ``scheduler_mode`` says), progress bars,
stopping cleanly on SIGINT/SIGTERM, and the checkpoint written after every task. It also calls the
framework's per-task outputs (``utils/eval_modes.py``): ``--eval_interval``'s CSV rows during a task and
``--save_models``' export after it.
"""
from __future__ import annotations

import math
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from tqdm.auto import tqdm

from utils.atomic import load_checked, save_checked
from utils.errors import UserError
from utils.eval_datasets import ExtraColumns
from utils.eval_modes import IntervalMetrics, export_task_model
from utils.evaluate import StepEvaluation, evaluate_step
from utils.loggers import Logger
from utils.precision import autocast
from utils.results import RunRecorder
from utils.seeding import rng_state, set_rng_state
from utils import distributed, signals
from utils.signals import Interrupted  # noqa: F401 - re-exported: the loop raises it

CHECKPOINT = "checkpoint.pt"
INTERRUPTED = "interrupted.pt"
DEBUG_BATCHES = 5


class TrainingDiverged(Exception):
    """The loss became NaN or infinite."""


class _Pending(dict):
    """``stop["signum"]`` of :func:`_stop_on_signals` when ``utils.signals`` handles the signals (``main.py``)."""

    def __getitem__(self, key):
        return signals.pending() if key == "signum" else super().__getitem__(key)


@contextmanager
def _stop_on_signals() -> Iterator[dict]:
    """Record SIGINT/SIGTERM instead of dying mid-write; the loop stops at the next batch. Under
    ``utils.signals.handled()`` (every ``main.py`` command) its handlers are used instead, which also stop
    every other phase."""
    if signals.installed():
        yield _Pending()
        return
    flag: dict = {"signum": None}

    def handler(signum, _frame):
        flag["signum"] = signum

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not in the main thread: leave signals alone
        previous = {}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class TaskLoop:
    def __init__(self, model, dataset, recorder: RunRecorder, checkpoint: bool = True, save_models: bool = False):
        self.model, self.dataset, self.recorder = model, dataset, recorder
        self.args = model.args
        self.checkpoint = checkpoint
        self.save_models = save_models
        self.interval = IntervalMetrics(self, self.args.eval_interval) if self.args.eval_interval else None
        #: --eval_datasets: extra columns scored after every task (and once before training), never trained
        self.extra = ExtraColumns(model, list(self.args.eval_datasets)) if self.args.eval_datasets else None
        self.data_generator = torch.Generator().manual_seed(self.args.seed)
        self.start_task = 0
        self._test_data: dict[int, object] = {}
        self.logger = Logger()          # --logger (utils/loggers.py); utils/experiment.py sets it

    # ---- resume -----------------------------------------------------------------------------
    def checkpoint_path(self) -> Path:
        return self.recorder.dir / CHECKPOINT

    def save_checkpoint(self, path: Path, completed_tasks: int, **extra) -> None:
        if not distributed.is_main():           # DDP: the ranks' states agree; rank 0 writes them
            return
        save_checked(path, {"format": 2, "completed_tasks": completed_tasks, "run": self._identity(),
                          "model": self.model.checkpoint_state(), "rng": rng_state(),
                          "data_generator": self.data_generator.get_state(),
                          "results": self.recorder.state(), **extra})

    def restore(self) -> int:
        """Load the last completed task's checkpoint; returns the task to continue with."""
        path = self.checkpoint_path()
        state = load_checked(path, "--resume: the checkpoint", map_location=self.model.device)
        if state.get("run") != self._identity():
            raise UserError(f"--resume: the checkpoint {path} is from another run ({state.get('run')}; this run is "
                            f"{self._identity()})")
        try:
            self.model.load_checkpoint_state(state["model"])
            set_rng_state(state["rng"])
            self.data_generator.set_state(state["data_generator"].cpu())
            self.recorder.load_state(state["results"])
            self.start_task = int(state["completed_tasks"])
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError, IndexError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise UserError(f"--resume: the checkpoint {path} does not fit this run's model and data "
                            f"({type(exc).__name__}: {first})") from None
        if not 0 <= self.start_task <= self.dataset.N_TASKS or len(self.recorder.class_il) != self.start_task:
            raise UserError(f"--resume: the checkpoint {path} is inconsistent ({self.start_task} tasks completed, "
                            f"{len(self.recorder.class_il)} rows of results, {self.dataset.N_TASKS} tasks)")
        return self.start_task

    def _identity(self) -> dict:
        """What a checkpoint must have been written by to be resumed here."""
        return {"model": self.model.NAME, "dataset": self.dataset.NAME, "seed": int(self.args.seed),
                "n_tasks": int(self.dataset.N_TASKS)}

    # ---- the loop ---------------------------------------------------------------------------
    def test_data(self, task: int):
        if task not in self._test_data:
            self._test_data[task] = self.dataset.task_data(task, "test").to(self.model.device)
        return self._test_data[task]

    def run(self) -> None:
        n_tasks = self.dataset.N_TASKS
        end = min(n_tasks, self.args.stop_after) if self.args.stop_after else n_tasks
        with _stop_on_signals() as stop:
            self.model.stop_request = stop      # so that training outside the stream (end_task) stops too
            distributed.broadcast_module(self.model)     # DDP: rank 0's weights everywhere, as DDP starts
            if self.extra is not None and self.start_task == 0:
                self.recorder.eval_datasets_zero_shot = self.extra.evaluate()
            for task in range(self.start_task, end):
                started = time.perf_counter()
                self.train_task(task, stop)
                evaluation = self.evaluate_after(task)
                class_il, task_il = evaluation.class_il, evaluation.task_il
                extras = evaluation.extras()
                if self.extra is not None:
                    extras["eval_datasets"] = self.extra.evaluate()
                with signals.deferred():        # the row, its checkpoint and its publication: all or nothing
                    self.recorder.add_row(class_il, task_il, time.perf_counter() - started, extras)
                    if self.save_models and distributed.is_main():  # before the checkpoint: a task always has its file
                        export_task_model(self.model, self.recorder.dir, task)
                    if self.checkpoint:
                        self.save_checkpoint(self.checkpoint_path(), task + 1)
                    self.recorder.publish_row()
                self.logger.task_end(task, class_il, task_il)
                if not self.args.quiet and distributed.is_main():
                    seen = [class_il[k] for k in range(task + 1)]
                    seen_t = [task_il[k] for k in range(task + 1)]
                    tqdm.write(f"task {task + 1}/{n_tasks}: class-IL {sum(seen) / len(seen):.2f}  "
                               f"task-IL {sum(seen_t) / len(seen_t):.2f}  "
                               f"({self.recorder.task_seconds[-1]:.1f}s)")

    def train_task(self, task: int, stop: dict) -> None:
        model, args = self.model, self.args
        tasks = list(range(task + 1)) if model.TRAIN_ON_ALL_SEEN_TASKS else [task]
        batch_size = args.batch_size
        if (args.n_iters is None and args.n_epochs == 0) or not model.TRAINS_ON_STREAM:  # training-free: no data
            data, steps_per_epoch, n_epochs, total_steps = None, 0, 0, 0
        else:
            data = model.training_data(self.dataset.task_data(tasks, "train").to(model.device))
            steps_per_epoch = data.num_batches(batch_size)
            if args.debug_mode:
                steps_per_epoch = min(steps_per_epoch, DEBUG_BATCHES)
            if args.n_iters is not None:
                total_steps = args.n_iters
                n_epochs = math.ceil(total_steps / max(steps_per_epoch, 1))
            else:
                n_epochs = args.n_epochs
                total_steps = n_epochs * steps_per_epoch
        model.meta_begin_task(self.dataset, steps_per_epoch, n_epochs)
        if task == 0 and args.eval_future:     # the zero-shot reference row of forward transfer
            zero_shot = self.evaluate_after(-1)
            self.recorder.set_reference(zero_shot.class_il, zero_shot.task_il)
        if self.interval is not None and total_steps:
            self.interval.begin_task(task)
            self.interval.after_step(task, 0)
        model.train()
        scheduler = model.scheduler
        step_each_iter = scheduler is not None and model.scheduler_mode == "iter"
        bar = tqdm(total=total_steps, desc=f"task {task + 1}/{self.dataset.N_TASKS}", leave=False,
                   disable=args.quiet or not distributed.is_main())
        step = 0
        ddp = distributed.active()
        agreed_stop = None          # DDP: the signal every rank stops for, agreed after each step
        for epoch in range(n_epochs):
            epoch_started = time.perf_counter()
            model.begin_epoch(epoch, self.dataset)
            for i, batch in enumerate(data.batches(batch_size, shuffle=True, generator=self.data_generator,
                                                   train=True)):
                if step >= total_steps or i >= steps_per_epoch:
                    break
                signum = agreed_stop if ddp else stop["signum"]
                if signum is not None:
                    bar.close()
                    raise Interrupted(signum)
                if batch["labels"].shape[0] < 2 and step > 0:  # a lone last item breaks BatchNorm
                    continue
                if ddp:
                    if batch["labels"].shape[0] < distributed.world_size():   # a rank would get no item
                        continue
                    total = batch["labels"].shape[0]
                    batch = {k: distributed.shard(v) for k, v in batch.items()}    # the same order on every rank
                    model._ddp_step = distributed.StepShard(batch["labels"].shape[0], total)
                batch = {k: v.to(model.device, non_blocking=True) for k, v in batch.items()}
                with signals.deferred(), autocast(model.precision, model.device):
                    loss = model.meta_observe(batch, epoch)        # a signal waits for the step to end
                if ddp:
                    loss, agreed_stop = self._agree(loss, stop)
                if not math.isfinite(loss):
                    bar.close()
                    raise TrainingDiverged(f"the loss became {loss} at task {task + 1}, epoch {epoch + 1}, "
                                           f"step {step + 1}: {model.divergence_hint()}")
                if step_each_iter:
                    scheduler.step()
                step += 1
                self.logger.step(task, step, loss)
                if self.interval is not None:
                    self.interval.after_step(task, step)
                bar.update()
                if step % 25 == 0:
                    bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            if scheduler is not None and not step_each_iter:
                scheduler.step()
            model.end_epoch(epoch, self.dataset)
            self.recorder.log("epoch", task=task, epoch=epoch, seconds=round(time.perf_counter() - epoch_started, 4))
        bar.close()
        model.meta_end_task(self.dataset)
        distributed.broadcast_module(model)       # DDP: end_task ran whole on every rank; rank 0's result wins
        check_finite(model, task)

    def _agree(self, loss: float, stop: dict) -> tuple[float, int | None]:
        """DDP, after a stream step: the global batch's loss and the signal every rank stops for (one
        all-reduce), so that every rank takes the same decisions."""
        model = self.model
        shard, model._ddp_step = model._ddp_step, None
        trained = any(p.grad is not None for group in model.optimizer.param_groups for p in group["params"])
        if not shard.stepped and trained:      # gradients were made, and not averaged over the ranks
            raise UserError(f"model '{model.NAME}' does not step its optimizer through self.step (or call "
                            f"self.reduce_gradients), so its ranks would train apart under DDP: run it as one "
                            f"process")
        total, signals_seen = distributed.all_sum([loss * shard.loss_weight(), float(stop["signum"] is not None)])
        own = stop["signum"]
        return total / distributed.world_size(), (own if own is not None else signal.SIGTERM) if signals_seen else None

    def evaluate_after(self, task: int) -> StepEvaluation:
        """Evaluate after training ``task`` (``-1``: before training, every task, for the zero-shot row)."""
        args = self.args
        n_tasks = self.dataset.N_TASKS
        tasks = list(range(n_tasks)) if args.eval_future or task < 0 else list(range(task + 1))
        novel = list(range(task + 1, n_tasks)) if args.eval_ood and task >= 0 else []
        test = {k: self.test_data(k) for k in sorted(set(tasks) | set(novel))}
        with autocast(self.model.precision, self.model.device):
            return evaluate_step(self.model, self.dataset, test, task, tasks, args.eval_batch_size,
                                 calibration=args.compute_ece and task >= 0, novel_tasks=novel,
                                 quiet=args.quiet, max_batches=3 if args.debug_mode else None,
                                 ece_per_batch=args.ece_per_batch)


def check_finite(model, task: int) -> None:
    """``TrainingDiverged`` if a parameter or buffer holds NaN or inf after ``task`` (before its checkpoint)."""
    bad = model.non_finite_parameters()
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise TrainingDiverged(f"{bad[0]}{more} became NaN or infinite by the end of task {task + 1}: "
                               f"{model.divergence_hint()}")
