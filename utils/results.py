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
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from utils.errors import UserError
        raise UserError(f"--results_path {results_path}: cannot create {parent} ({exc.strerror or exc})") from None
    for _ in range(100):
        path = parent / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run directory under {parent}")


def environment() -> dict[str, Any]:
    """What a rerun must match for identical numbers: packages, torch's CPU thread count (training from scratch
    on the CPU, e.g. ER's small CNN, ends points apart with 1 and 2 threads), and the CPU: its model and the vector
    instructions torch's kernels use (``cpu_capability``, e.g. AVX2 or AVX512), which can move the last bits."""
    import torch
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "platform": platform.platform(),
            "packages": versions, "torch_threads": torch.get_num_threads(), "cpu": _cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "git_commit": _git_commit()}


def _cpu_model() -> str | None:
    """The CPU's model name (Linux's /proc/cpuinfo; elsewhere what ``platform.processor()`` says, or None)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


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
        #: Tasks that are evaluated but never trained (left out of the MTIL summary).
        self.eval_only_tasks: list[int] = []
        #: Counters a model reports about its run (e.g. images encoded vs read from the feature cache).
        self.stats: dict[str, Any] = {}
        # what each evaluation measured besides accuracy (see utils/evaluate.py), one entry per row
        self.test_sizes: list[int | None] = [None] * n_tasks
        self.top5: dict[str, list[list[float | None]]] = {"class_il": [], "task_il": []}
        self.calibration: list[dict[str, Any] | None] = []
        self.novelty: list[dict[str, Any] | None] = []
        self.reference: dict[str, list[float | None]] | None = None   # zero-shot accuracies, --eval_future
        #: --eval_datasets: per row, {dataset: its entry (top1, top5, n_test, its own metrics)}; and before training
        self.eval_datasets: list[dict[str, Any] | None] = []
        self.eval_datasets_zero_shot: dict[str, Any] | None = None
        #: Whether this recorder writes its files (False on the DDP ranks other than 0).
        self.writes = True

    # ---- state for checkpoints --------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"class_il": self.class_il, "task_il": self.task_il, "task_seconds": self.task_seconds,
                "test_sizes": self.test_sizes, "top5": self.top5, "calibration": self.calibration,
                "novelty": self.novelty, "reference": self.reference, "eval_datasets": self.eval_datasets,
                "eval_datasets_zero_shot": self.eval_datasets_zero_shot}

    def load_state(self, state: dict[str, Any]) -> None:
        self.class_il = [list(r) for r in state["class_il"]]
        self.task_il = [list(r) for r in state["task_il"]]
        self.task_seconds = list(state["task_seconds"])
        rows = len(self.class_il)       # checkpoints from before these fields existed: "not measured"
        self.test_sizes = list(state.get("test_sizes", [None] * self.n_tasks))
        self.top5 = {w: [list(r) for r in state.get("top5", {}).get(w, [[None] * self.n_tasks] * rows)]
                     for w in ("class_il", "task_il")}
        self.calibration = list(state.get("calibration", [None] * rows))
        self.novelty = list(state.get("novelty", [None] * rows))
        self.reference = state.get("reference")
        self.eval_datasets = list(state.get("eval_datasets", [None] * rows))
        self.eval_datasets_zero_shot = state.get("eval_datasets_zero_shot")

    # ---- recording ------------------------------------------------------------------------
    def log(self, event: str, **fields: Any) -> None:
        if not self.writes:
            return
        line = json.dumps(_jsonable({"event": event, "time": time.time(), **fields}), allow_nan=False)
        try:
            with open(self.dir / "log.jsonl", "a") as fh:
                fh.write(line + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:          # a full or read-only disk: one line, not a traceback
            from utils.atomic import OutputError
            raise OutputError(f"cannot write {self.dir / 'log.jsonl'}: {exc.strerror or exc}") from None

    def add_row(self, class_il: dict[int, float], task_il: dict[int, float], seconds: float,
                extra: dict[str, Any] | None = None) -> None:
        """Row ``t`` of the matrices (in memory); ``class_il``/``task_il`` map evaluated task -> accuracy.
        ``extra`` holds the rest of the evaluation (``StepEvaluation.extras()``: test-set sizes, top-5,
        calibration, novel-data detection). The loop checkpoints this state before :meth:`publish_row`
        writes it out, so that a run killed in between resumes from a checkpoint that agrees with what it
        published."""
        extra = extra or {}
        self.class_il.append([class_il.get(k) for k in range(self.n_tasks)])
        self.task_il.append([task_il.get(k) for k in range(self.n_tasks)])
        self.task_seconds.append(seconds)
        for k, n in (extra.get("sizes") or {}).items():
            self.test_sizes[k] = int(n)
        top5 = extra.get("top5") or {}
        for which in ("class_il", "task_il"):
            self.top5[which].append([top5.get(which, {}).get(k) for k in range(self.n_tasks)])
        self.calibration.append(extra.get("calibration"))
        self.novelty.append(extra.get("novelty"))
        self.eval_datasets.append(extra.get("eval_datasets"))

    def set_reference(self, class_il: dict[int, float], task_il: dict[int, float]) -> None:
        """The zero-shot accuracies before any training, the reference of forward transfer."""
        self.reference = {"class_il": [class_il.get(k) for k in range(self.n_tasks)],
                          "task_il": [task_il.get(k) for k in range(self.n_tasks)]}

    def publish_row(self) -> None:
        task = len(self.class_il) - 1
        self.log("task_end", task=task, class_il=self.class_il[-1], task_il=self.task_il[-1],
                 seconds=self.task_seconds[-1])
        self.write()

    def matrix(self, which: str) -> np.ndarray:
        rows = {"class_il": self.class_il, "task_il": self.task_il, "class_il_top5": self.top5["class_il"],
                "task_il_top5": self.top5["task_il"]}[which]
        return _array(rows)

    def metrics(self) -> dict[str, Any]:
        """Every metric that applies to what was evaluated (definitions in ``utils/metrics.py``)."""
        if not self.class_il:
            return {}
        out: dict[str, Any] = {"averaging": metrics.TASK_MEAN}
        seen = len(self.class_il)
        sizes = None if None in self.test_sizes[:seen] else \
            np.array([1 if n is None else n for n in self.test_sizes], dtype=float)    # future columns are unused
        weighted: dict[str, Any] = {"averaging": metrics.SAMPLE_WEIGHTED}
        top5: dict[str, Any] = {"averaging": metrics.TASK_MEAN}
        for which in ("class_il", "task_il"):
            A = self.matrix(which)
            out[which] = {**metrics.summary(A), "step_accuracy": metrics.step_accuracies(A).tolist()}
            if np.isfinite(A[np.triu_indices(A.shape[0], 1, A.shape[1])]).any():     # --eval_future
                out[which]["future_transfer"] = metrics.future_transfer(A)
                # tasks evaluated but never trained (MTIL's CIFAR10) are excluded, as ZSCL does
                out[which]["mtil"] = metrics.mtil_summary(np.delete(A, self.eval_only_tasks, axis=1))
            if self.reference is not None:
                out[which]["forward_transfer"] = metrics.forward_transfer(A, _array([self.reference[which]])[0])
            if sizes is not None:
                weighted[which] = {"step_accuracy": metrics.step_accuracies(A, sizes).tolist(),
                                   "avg_accuracy": metrics.average_incremental_accuracy(A, sizes),
                                   "last_accuracy": metrics.last_accuracy(A, sizes)}
            T5 = self.matrix(f"{which}_top5")
            if np.isfinite(np.diag(T5)).all():           # every seen task had >= 5 candidate classes
                top5[which] = {"step_accuracy": metrics.step_accuracies(T5).tolist(),
                               "avg_accuracy": metrics.average_incremental_accuracy(T5),
                               "last_accuracy": metrics.last_accuracy(T5)}
        # the flat keys are the class-IL numbers, the headline of class-incremental benchmarks
        out.update(out["class_il"])
        if sizes is not None:
            out["sample_weighted"] = weighted
        if len(top5) > 1:
            out["top5"] = top5
        eces = [c["ece"] for c in self.calibration if c is not None]
        if eces:
            out["ece"] = self.calibration[-1]["ece"] if self.calibration[-1] is not None else None
            out["ece_avg"] = float(np.nanmean(np.array(eces, dtype=float)))
        columns = self._eval_dataset_metrics()
        if columns:
            out["eval_datasets"] = columns
        steps = [n for n in self.novelty if n is not None]
        if steps:       # mean over the steps that had future tasks
            out["novelty"] = {score: {key: float(np.nanmean([s[score][key] for s in steps]))
                                      for key in ("auroc", "aupr", "fpr95")}
                              for score in steps[0] if isinstance(steps[0][score], dict)}
        return out

    def _eval_dataset_metrics(self) -> dict[str, Any]:
        """``metrics.eval_datasets.<dataset>``: each number of the entry after the last task (``top1``, ``pm10``,
        ...), ``<name>_avg`` its mean over the tasks, and ``<name>_zero_shot`` before training."""
        rows = [r for r in self.eval_datasets if r]
        if not rows:
            return {}
        out: dict[str, Any] = {}
        for label in rows[-1]:
            numbers = [k for k, v in rows[-1][label].items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                       and k not in ("n_classes", "n_test", "n_anchors")]
            entry = {k: rows[-1][label][k] for k in numbers}
            for k in numbers:
                values = [r[label][k] for r in rows if label in r and r[label].get(k) is not None]
                entry[f"{k}_avg"] = float(np.mean(values)) if values else None
                zero = (self.eval_datasets_zero_shot or {}).get(label, {}).get(k)
                if zero is not None:
                    entry[f"{k}_zero_shot"] = zero
            out[label] = entry
        return out

    def _eval_datasets_record(self) -> dict[str, Any]:
        if all(r is None for r in self.eval_datasets):
            return {}
        return {"eval_datasets": {
            "layout": "steps[t] = after training task t: per dataset (never trained) top1/top5 in percent over its "
                      "test set and its own metrics (pm0/pm10, acc_worst_region, f1_macro, ...); zero_shot = before "
                      "any training",
            "zero_shot": self.eval_datasets_zero_shot, "steps": self.eval_datasets}}

    def results(self) -> dict[str, Any]:
        return _jsonable({
            **self.header,
            "status": self.status,
            "tasks_completed": len(self.class_il),
            "n_tasks": self.n_tasks,
            "accuracy_matrix": {"class_il": self.class_il, "task_il": self.task_il,
                                "layout": "row t = after training task t, column k = task k, percent; "
                                          "null = not evaluated"},
            "test_sizes": self.test_sizes,
            "top5_matrix": {**self.top5, "layout": "as accuracy_matrix; null = not evaluated or fewer than 5 "
                                                   "candidate classes"},
            **({"zero_shot_accuracy": self.reference} if self.reference is not None else {}),
            **self._calibration_record(),
            **self._novelty_record(),
            **self._eval_datasets_record(),
            "metrics": self.metrics(),
            "seconds_per_task": self.task_seconds,
            "stats": self.stats,
            "total_seconds": float(sum(self.task_seconds)),
        })

    def _calibration_record(self) -> dict[str, Any]:
        if all(c is None for c in self.calibration):
            return {}
        edges = metrics.calibration_bin_edges(len(next(c for c in self.calibration if c)["counts"]) - 1)
        return {"calibration": {
            "definition": "ECE = sum_b (n_b / N) |acc_b - conf_b| (L1, percent) over 15 equal-width confidence bins "
                          "plus one for confidence exactly 1 (torchmetrics' calibration_error binning), over all seen "
                          "tasks' test images after each task (ece_mode 'dataset'), or the mean of that value over "
                          "evaluation batches (ece_mode 'per_batch', --ece_per_batch 1, CLAP4CLIP's); confidence = "
                          "max softmax over the seen classes, correct = class-IL prediction",
            "bin_edges": edges.tolist(), "steps": self.calibration}}

    def _novelty_record(self) -> dict[str, Any]:
        if all(n is None for n in self.novelty):
            return {}
        return {"novelty": {
            "setting": "after task t < T-1: in-distribution = test images of tasks 0..t, novel = test images of "
                       "tasks t+1..T-1, both scored over the seen classes; in-distribution is the positive class",
            "scores": "energy = logsumexp of the logits; max_softmax; variance = -sum_c Var over Monte-Carlo "
                      "samples of softmax (methods with forward_samples); higher = in-distribution",
            "steps": [None if n is None else {"task": t, **n} for t, n in enumerate(self.novelty)]}}

    def write(self) -> None:
        if not self.writes:
            return
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
        for name, entry in m.get("eval_datasets", {}).items():
            zero = entry.get("top1_zero_shot")
            lines.append(f"{'':>10}   {name}: top-1 {_fmt(entry.get('top1')).strip()} after the last task, "
                         f"{_fmt(entry.get('top1_avg')).strip()} on average"
                         + ("" if zero is None else f", {_fmt(zero).strip()} before training"))
        return "\n".join(lines)


def _array(rows: list[list[float | None]]) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=float)


def _fmt(v: float) -> str:
    return f"{v:8.2f}" if v is not None and math.isfinite(v) else f"{'-':>8}"
