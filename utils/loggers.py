"""``--logger none|tensorboard|wandb``: a run's per-step losses, per-task accuracies and final metrics, also sent to
TensorBoard (``torch.utils.tensorboard``, into ``<run_dir>/tensorboard/``) or Weights & Biases (``wandb``, its files
in ``<run_dir>/wandb/``). Both packages are optional: asking for one that is not installed is a one-line error
before the run starts. The run's own files (``results.json``, ``log.jsonl``) are written as always; a logger only
mirrors them.

What is logged (the same names in both):

- ``loss/taskNN``: the training loss of every step of task NN (x axis: the step within the task);
- ``accuracy/class_il/taskNN`` and ``accuracy/task_il/taskNN``: after each task, the accuracy on each task evaluated
  so far (x axis: tasks completed), and ``accuracy/class_il/seen``, ``accuracy/task_il/seen``: their mean over the
  seen tasks (the summary table's rows);
- ``final/<metric>``: the run's metrics at its end (``results.json``'s ``metrics``, flattened with ``/``, numbers
  only: ``final/last_accuracy``, ``final/task_il/bwt``, ``final/mtil/transfer``, ...).

A resumed run logs into the same directory from the task it continues with (TensorBoard appends a new event file;
W&B starts a new run there).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, Mapping

from utils.errors import UserError

LOGGERS = ("none", "tensorboard", "wandb")
_NEEDS = {"tensorboard": ("tensorboard", "pip install tensorboard (it is in requirements-dev.txt)"),
          "wandb": ("wandb", "pip install wandb")}


def check_available(name: str) -> None:
    """A :class:`UserError` naming the package when ``--logger NAME`` cannot be used here."""
    if name == "none":
        return
    module, how = _NEEDS[name]
    try:
        __import__(module)
    except ImportError:
        raise UserError(f"--logger {name}: the {module} package is not installed ({how}), or use --logger none")


class Logger:
    """``--logger none``: every call does nothing. The others override :meth:`scalars` and :meth:`close`."""

    def step(self, task: int, step: int, loss: float) -> None:
        """The loss of step ``step`` (1-based) of task ``task`` (0-based)."""
        self.scalars({f"loss/task{task + 1:02d}": float(loss)}, step)

    def task_end(self, task: int, class_il: Mapping[int, float | None], task_il: Mapping[int, float | None]) -> None:
        """The accuracies after task ``task`` on each evaluated task (``{task: percent}``)."""
        values: dict[str, float] = {}
        for which, row in (("class_il", class_il), ("task_il", task_il)):
            seen = [row[k] for k in range(task + 1) if row.get(k) is not None]
            values.update({f"accuracy/{which}/task{k + 1:02d}": float(v) for k, v in row.items() if v is not None})
            if seen:
                values[f"accuracy/{which}/seen"] = sum(seen) / len(seen)
        self.scalars(values, task + 1)

    def final(self, metrics: Mapping[str, Any], tasks_completed: int) -> None:
        self.scalars({f"final/{k}": v for k, v in flatten(metrics)}, tasks_completed)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLogger(Logger):
    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, global_step=step)

    def close(self) -> None:
        self.writer.close()


class WandbLogger(Logger):
    """One W&B run per Tusk process, named after the run directory, with the run's config.json as its config.
    W&B wants one increasing step per run, so each entry also carries its own x value (``task_step`` for losses,
    ``tasks_completed`` for accuracies and final metrics), declared as the x axis of its group."""

    def __init__(self, run_dir: Path, config: Mapping[str, Any], project: str, mode: str):
        import os
        if mode == "offline":       # before wandb starts: its telemetry reads the mode from the environment
            os.environ.setdefault("WANDB_MODE", "offline")
        import wandb
        self.wandb = wandb
        self.run = wandb.init(project=project, name=Path(run_dir).name, dir=str(run_dir), config=dict(config),
                              mode=mode, reinit="create_new") if _has_reinit_modes(wandb) else \
            wandb.init(project=project, name=Path(run_dir).name, dir=str(run_dir), config=dict(config), mode=mode,
                       reinit=True)
        for group, axis in (("loss", "task_step"), ("accuracy", "tasks_completed"), ("final", "tasks_completed")):
            self.run.define_metric(axis)
            self.run.define_metric(f"{group}/*", step_metric=axis)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        axis = "task_step" if any(k.startswith("loss/") for k in values) else "tasks_completed"
        self.run.log({**values, axis: step})

    def close(self) -> None:
        self.run.finish()


def _has_reinit_modes(wandb) -> bool:
    """wandb 0.19.10 and later take ``reinit="create_new"``; earlier ones a boolean."""
    try:
        from packaging.version import Version
        return Version(wandb.__version__) >= Version("0.19.10")
    except Exception:                           # noqa: BLE001 - an unparsable version: the old form
        return False


def make_logger(name: str, run_dir: Path, config: Mapping[str, Any], project: str = "tusk",
                mode: str = "online") -> Logger:
    check_available(name)
    if name == "tensorboard":
        return TensorBoardLogger(run_dir)
    if name == "wandb":
        return WandbLogger(run_dir, config, project, mode)
    return Logger()


def flatten(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """``(a/b/c, number)`` for every finite number in a nested mapping (lists and strings are left out)."""
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from flatten(value, f"{name}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            yield name, float(value)
