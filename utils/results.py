"""A run's directory and what is written into it as the run goes.

``<results_path>/<dataset>/<model>/<timestamp>-<id>/`` holds:
- ``config.json``: every resolved option and where it came from (cli, YAML, defaults);
- ``log.jsonl``: one JSON object per event (run start, each task's end, resume, interrupt, end),
  appended and flushed as they happen;
- ``results.json``: accuracy matrices, metrics, timings and provenance, rewritten atomically after
  every task (``status`` says whether the run is running, interrupted or completed);
- ``checkpoint.pt``: the state after the last completed task (see ``utils/checkpoint.py``).

A new run never reuses a directory; ``--resume`` continues in the run's own directory.
"""
from __future__ import annotations

import json
import math
import os
import platform
import secrets
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from utils import metrics
from utils.atomic import write_json

PACKAGES = ("torch", "torchvision", "timm", "open_clip_torch", "numpy", "scipy", "kornia")
REPO_ROOT = Path(__file__).resolve().parent.parent


def new_run_dir(results_path: str, dataset: str, model: str) -> Path:
    parent = Path(results_path) / dataset / model
    parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        path = parent / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run directory under {parent}")


def environment() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "platform": platform.platform(),
            "packages": versions, "git_commit": _git_commit()}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=False).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _jsonable(value: Any) -> Any:
    """NaN/inf become ``null`` so results stay strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    return value


class RunRecorder:
    """Accumulates a run's results and writes them to its directory."""

    def __init__(self, run_dir: Path, n_tasks: int, header: dict[str, Any]):
        self.dir = Path(run_dir)
        self.n_tasks = n_tasks
        self.header = header            # model, dataset, seed, class order, environment, ...
        self.class_il: list[list[float | None]] = []
        self.task_il: list[list[float | None]] = []
        self.task_seconds: list[float] = []
        self.status = "running"

    # ---- state for checkpoints --------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"class_il": self.class_il, "task_il": self.task_il, "task_seconds": self.task_seconds}

    def load_state(self, state: dict[str, Any]) -> None:
        self.class_il = [list(r) for r in state["class_il"]]
        self.task_il = [list(r) for r in state["task_il"]]
        self.task_seconds = list(state["task_seconds"])

    # ---- recording ------------------------------------------------------------------------
    def log(self, event: str, **fields: Any) -> None:
        line = json.dumps(_jsonable({"event": event, "time": time.time(), **fields}), allow_nan=False)
        with open(self.dir / "log.jsonl", "a") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def add_row(self, class_il: dict[int, float], task_il: dict[int, float], seconds: float) -> None:
        """Row ``t`` of the matrices (in memory); ``class_il``/``task_il`` map evaluated task -> accuracy.
        The loop checkpoints this state before :meth:`publish_row` writes it out, so that a run killed
        in between resumes from a checkpoint that agrees with what it published."""
        self.class_il.append([class_il.get(k) for k in range(self.n_tasks)])
        self.task_il.append([task_il.get(k) for k in range(self.n_tasks)])
        self.task_seconds.append(seconds)

    def publish_row(self) -> None:
        task = len(self.class_il) - 1
        self.log("task_end", task=task, class_il=self.class_il[-1], task_il=self.task_il[-1],
                 seconds=self.task_seconds[-1])
        self.write()

    def matrix(self, which: str) -> np.ndarray:
        rows = self.class_il if which == "class_il" else self.task_il
        return np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=float)

    def metrics(self) -> dict[str, Any]:
        if not self.class_il:
            return {}
        out: dict[str, Any] = {"averaging": "mean of per-task accuracies"}
        for which in ("class_il", "task_il"):
            out[which] = metrics.summary(self.matrix(which))
        # the flat keys are the class-IL numbers, the headline of class-incremental benchmarks
        out.update(out["class_il"])
        return out

    def results(self) -> dict[str, Any]:
        return _jsonable({
            **self.header,
            "status": self.status,
            "tasks_completed": len(self.class_il),
            "n_tasks": self.n_tasks,
            "accuracy_matrix": {"class_il": self.class_il, "task_il": self.task_il,
                                "layout": "row t = after training task t, column k = task k, percent; "
                                          "null = not evaluated"},
            "metrics": self.metrics(),
            "seconds_per_task": self.task_seconds,
            "total_seconds": float(sum(self.task_seconds)),
        })

    def write(self) -> None:
        write_json(self.dir / "results.json", self.results())

    # ---- console --------------------------------------------------------------------------
    def summary_table(self) -> str:
        m = self.metrics()
        if not m:
            return "no task completed"
        lines = [f"{'after task':>10} | {'class-IL':>8} | {'task-IL':>8}"]
        for t in range(len(self.class_il)):
            c = metrics.step_accuracies(self.matrix("class_il")[:t + 1])[-1]
            k = metrics.step_accuracies(self.matrix("task_il")[:t + 1])[-1]
            lines.append(f"{t + 1:>10} | {c:8.2f} | {k:8.2f}")
        lines.append("")
        lines.append(f"{'':>10} | {'class-IL':>8} | {'task-IL':>8}")
        for key, label in (("avg_accuracy", "avg acc"), ("last_accuracy", "last acc"), ("bwt", "BWT"),
                           ("forgetting", "forgetting")):
            c, k = m["class_il"][key], m["task_il"][key]
            lines.append(f"{label:>10} | {_fmt(c)} | {_fmt(k)}")
        return "\n".join(lines)


def _fmt(v: float) -> str:
    return f"{v:8.2f}" if v is not None and math.isfinite(v) else f"{'-':>8}"
