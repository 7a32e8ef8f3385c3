"""Many runs at once, for leaderboards and plots: find run directories, read them, group them by setting.

A *setting* is everything a run was configured with except what cannot change its numbers: runs that
differ only in :data:`NOT_A_SETTING` (the seed above all) are repetitions of one experiment, and their
metrics are summarised as mean ± sample standard deviation (``ddof=1``). Only the standard library and
numpy are used, so that summarising a thousand runs takes about a second.
"""
from __future__ import annotations

import json
import math
import os
import shlex
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from utils import metrics

RESULTS, CONFIG = "results.json", "config.json"
#: Options that do not change what a run measures (where it runs, what it prints, what extra it records).
NOT_A_SETTING = frozenset({
    "seed", "results_path", "data_path", "device", "num_workers", "quiet", "notes", "checkpoint",
    "stop_after", "eval_batch_size", "compute_ece", "eval_ood", "feature_cache", "download", "eval_datasets",
    "logger", "wandb_project", "wandb_mode",
})
#: Option values under which the evaluation batch size changes the numbers, so ``eval_batch_size`` is a setting:
#: CLAP's batch-wide VGA context (a prediction depends on the other images of its batch) and the per-batch ECE.
BATCH_DEPENDENT = (("vga_context", "batch"), ("ece_per_batch", True))


def mean_std(mean: float, std: float, n: int) -> str:
    """A table cell: ``mean ± std`` over n runs (the mean alone for one run, ``–`` for none)."""
    if n == 0 or math.isnan(mean):
        return "–"
    return f"{mean:.2f}" if n < 2 else f"{mean:.2f} ± {std:.2f}"


def not_a_setting(opts: dict[str, Any]) -> frozenset[str]:
    """:data:`NOT_A_SETTING` for a run with options ``opts`` (without ``eval_batch_size`` when it matters)."""
    if any(opts.get(name) == value for name, value in BATCH_DEPENDENT):
        return NOT_A_SETTING - {"eval_batch_size"}
    return NOT_A_SETTING


#: Shown in a setting's label whenever set, because tables are read by memory size.
ALWAYS_SHOWN = ("buffer_size", "buffer_per_class")


@dataclass
class Run:
    path: Path
    results: dict[str, Any]
    config: dict[str, Any]

    @property
    def model(self) -> str:
        return self.results.get("model") or self.config.get("selection", {}).get("model", "?")

    @property
    def dataset(self) -> str:
        return self.results.get("dataset") or self.config.get("selection", {}).get("dataset", "?")

    @property
    def backbone(self) -> str:
        return self.results.get("backbone") or self.config.get("selection", {}).get("backbone", "?")

    @property
    def seed(self) -> Any:
        return self.results.get("seed", self.config.get("run", {}).get("seed"))

    @property
    def status(self) -> str:
        return self.results.get("status", "?")

    def options(self) -> dict[str, Any]:
        """Every configured option, flattened (option names are unique across run, method, dataset and
        backbone), plus ``model_config``; lists become tuples so that they can be compared and hashed."""
        out: dict[str, Any] = {"model_config": self.config.get("selection", {}).get("model_config")}
        for group in ("run", "method", "dataset", "backbone"):
            for key, value in self.config.get(group, {}).items():
                out[key] = tuple(value) if isinstance(value, list) else value
        return out

    def command(self) -> str:
        argv = self.config.get("argv")
        return "python main.py " + shlex.join(argv) if argv else f"(no command recorded in {self.path})"

    def metric(self, name: str) -> float | None:
        """A metric of ``results.json``'s ``metrics`` by dotted path, e.g. ``last_accuracy``,
        ``task_il.forgetting``, ``mtil.transfer``, ``novelty.energy.auroc``; ``None`` if absent."""
        value: Any = self.results.get("metrics", {})
        for part in name.split("."):
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def matrix(self, which: str = "class_il") -> np.ndarray:
        rows = self.results.get("accuracy_matrix", {}).get(which, [])
        return np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=float).reshape(len(rows), -1)


@dataclass
class Group:
    """The runs of one setting (typically one per seed)."""
    dataset: str
    model: str
    backbone: str
    setting: dict[str, Any]
    runs: list[Run] = field(default_factory=list)
    label: str = ""             # the options that tell this group apart from its neighbours (see group_runs)

    @property
    def name(self) -> str:
        return f"{self.model} ({self.label})" if self.label else self.model

    def seeds(self) -> list[Any]:
        return sorted((r.seed for r in self.runs), key=lambda s: (s is None, s))

    def commands(self) -> list[str]:
        """Each run's command line, by seed."""
        return [r.command() for r in sorted(self.runs, key=lambda r: (r.seed is None, r.seed))]

    def stats(self, metric: str) -> tuple[float, float, int]:
        """``(mean, sample std, n)`` of ``metric`` over the runs that have it (std NaN for n < 2)."""
        values = np.array([v for v in (r.metric(metric) for r in self.runs) if v is not None], dtype=float)
        if values.size == 0:
            return float("nan"), float("nan"), 0
        std = float(values.std(ddof=1)) if values.size > 1 else float("nan")
        return float(values.mean()), std, int(values.size)

    def step_accuracies(self, which: str = "class_il") -> np.ndarray:
        """One row per run: the accuracy after each task (mean of per-task accuracies), NaN-padded."""
        rows = [metrics.step_accuracies(m) for m in (r.matrix(which) for r in self.runs) if m.size]
        width = max((len(r) for r in rows), default=0)
        padded = [np.pad(r, (0, width - len(r)), constant_values=np.nan) for r in rows]
        return np.array(padded).reshape(len(rows), width)

    def mean_matrix(self, which: str = "class_il") -> np.ndarray:
        """The element-wise mean accuracy matrix over the runs (the largest shape; NaN where no run has a value)."""
        mats = [m for m in (r.matrix(which) for r in self.runs) if m.size]
        if not mats:
            return np.empty((0, 0))
        shape = tuple(max(m.shape[i] for m in mats) for i in range(2))
        stack = np.full((len(mats), *shape), np.nan)
        for i, m in enumerate(mats):
            stack[i, :m.shape[0], :m.shape[1]] = m
        with warnings.catch_warnings():             # an all-NaN slice is NaN, as intended
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(stack, axis=0)

    def reliability(self, step: int = -1) -> dict[str, np.ndarray] | None:
        """The reliability-diagram bins after ``step`` pooled over the runs (counts add up; accuracy and
        confidence are count-weighted), or ``None`` if no run recorded calibration."""
        parts = []
        for run in self.runs:
            steps = run.results.get("calibration", {}).get("steps") or []
            if steps and steps[step] is not None:
                parts.append(steps[step])
        if not parts:
            return None
        counts = np.array([p["counts"] for p in parts], dtype=float)
        total = counts.sum(0)

        def pooled(key: str) -> np.ndarray:
            values = np.array([[np.nan if v is None else v for v in p[key]] for p in parts], dtype=float)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(counts > 0, values * counts, 0.0).sum(0) / total

        edges = metrics.calibration_bin_edges(counts.shape[1] - 1)
        return {"bin_edges": edges, "counts": total, "accuracy": pooled("accuracy"),
                "confidence": pooled("confidence"), "n_runs": len(parts)}


def find_runs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Every run directory at or below ``paths`` (a directory holding ``results.json``), sorted, once each."""
    found: set[Path] = set()
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or directory")
        if path.name == RESULTS and path.is_file():
            path = path.parent
        if (path / RESULTS).is_file():
            found.add(path)
            continue
        for root, dirs, files in os.walk(path):
            if RESULTS in files:
                found.add(Path(root))
                dirs[:] = []            # a run directory holds no other runs
    return sorted(found)


def load_run(path: Path) -> Run:
    """The run in ``path``; ``ValueError`` naming what is wrong when its files are not what a run writes (a
    truncated or hand-edited ``results.json``, a run that completed no task)."""
    try:
        results = json.loads((path / RESULTS).read_bytes().decode("utf-8"))
        config_path = path / CONFIG
        config = json.loads(config_path.read_bytes().decode("utf-8")) if config_path.is_file() else {}
    except UnicodeDecodeError as err:
        raise ValueError(f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    problem = _malformed(results, config)
    if problem:
        raise ValueError(problem)
    return Run(path, results, config)


def _malformed(results: Any, config: Any) -> str | None:
    """What makes ``results`` / ``config`` unusable by the reports, or None."""
    if not isinstance(results, dict):
        return f"{RESULTS} is not a JSON object"
    if not isinstance(config, dict) or any(not isinstance(config.get(k, {}), dict)
                                           for k in ("selection", "run", "method", "dataset", "backbone")):
        return f"{CONFIG} is not a run configuration"
    if not isinstance(config.get("argv", []), list):
        return f"{CONFIG}: 'argv' is not a list"
    for key in ("model", "dataset", "backbone", "status"):
        if key in results and not isinstance(results[key], str):
            return f"{RESULTS}: '{key}' is not a string"
    if not isinstance(results.get("seed", 0), (int, type(None))) or isinstance(results.get("seed"), bool):
        return f"{RESULTS}: 'seed' is not an integer"
    if not isinstance(results.get("metrics", {}), dict):
        return f"{RESULTS}: 'metrics' is not an object"
    matrices = results.get("accuracy_matrix")
    if not isinstance(matrices, dict):
        return f"{RESULTS} has no accuracy_matrix (not a run's results)"
    for which in ("class_il", "task_il"):
        rows = matrices.get(which, [])
        if not isinstance(rows, list) or any(not isinstance(r, list) for r in rows):
            return f"{RESULTS}: accuracy_matrix.{which} is not a list of rows"
        if rows and len({len(r) for r in rows}) != 1:
            return f"{RESULTS}: accuracy_matrix.{which} has rows of different lengths"
        if any(v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool)) for r in rows for v in r):
            return f"{RESULTS}: accuracy_matrix.{which} holds values that are not numbers"
    if not matrices.get("class_il"):
        return "no task completed (0 rows of results)"
    calibration = results.get("calibration", {})
    steps = calibration.get("steps", []) if isinstance(calibration, dict) else None
    if not isinstance(steps, list) or any(
            s is not None and (not isinstance(s, dict) or not all(isinstance(s.get(k), list) and len(s[k]) ==
                                                                  len(s.get("counts") or [])
                                                                  for k in ("counts", "accuracy", "confidence")))
            for s in steps):
        return f"{RESULTS}: calibration.steps is malformed"
    return None


def load_runs(paths: Iterable[str | os.PathLike], include_incomplete: bool = False) -> list[Run]:
    """The runs at or below ``paths``; only completed ones unless ``include_incomplete`` (a stopped or
    interrupted run's last accuracy is not comparable with a finished one's)."""
    runs = []
    for path in find_runs(paths):
        try:
            runs.append(load_run(path))
        except (OSError, ValueError) as err:        # one unreadable run must not hide a thousand others
            warnings.warn(f"skipping {path}: {err}", stacklevel=2)
    return runs if include_incomplete else [r for r in runs if r.status == "completed"]


def load_runs_for_cli(paths: Iterable[str | os.PathLike], include_incomplete: bool) -> list[Run] | None:
    """``load_runs`` for a command line: prints a one-line error and returns ``None`` when no run is usable."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runs = load_runs(paths, include_incomplete=include_incomplete)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return None
    for w in caught:                    # one line per skipped run, without the warning machinery's source line
        print(f"note: {w.message}", file=sys.stderr)
    if not runs:
        print("error: no completed run found (a run is a directory with results.json; "
              "--include-incomplete counts unfinished ones)", file=sys.stderr)
        return None
    return runs


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Runs grouped by (dataset, model, backbone, every option not in :data:`NOT_A_SETTING`; ``eval_batch_size``
    counts for runs whose numbers depend on it, :data:`BATCH_DEPENDENT`).

    Only options every run of the same dataset and model recorded are compared (an option added to Tusk
    after some runs were made cannot split them). Each group's ``label`` names the options in
    :data:`ALWAYS_SHOWN` that are set, and those whose values differ between the groups of the same dataset
    and model, so rows of one method tell themselves apart."""
    options = [run.options() for run in runs]
    common: dict[tuple[str, str], set[str]] = {}
    for run, opts in zip(runs, options):
        family = (run.dataset, run.model)
        common[family] = common[family] & opts.keys() if family in common else set(opts)
    groups: dict[tuple, Group] = {}
    for run, opts in zip(runs, options):
        excluded = not_a_setting(opts)
        setting = {k: opts[k] for k in common[(run.dataset, run.model)] if k not in excluded}
        key = (run.dataset, run.model, run.backbone, tuple(sorted(setting.items(), key=lambda kv: kv[0])))
        if key not in groups:
            groups[key] = Group(run.dataset, run.model, run.backbone, setting)
        groups[key].runs.append(run)
    out = list(groups.values())
    siblings: dict[tuple[str, str], list[Group]] = {}
    for g in out:
        siblings.setdefault((g.dataset, g.model), []).append(g)
    for family in siblings.values():
        keys = set().union(*(g.setting for g in family))
        varying = {k for k in keys if len({repr(g.setting.get(k)) for g in family}) > 1}
        for g in family:
            shown = sorted(k for k in keys if k in varying or (k in ALWAYS_SHOWN and g.setting.get(k)))
            g.label = ", ".join(f"{k}={_show(g.setting.get(k))}" for k in shown)
    return sorted(out, key=lambda g: (g.dataset, g.model, g.backbone, g.label))


def metric_names(runs: Sequence[Run]) -> list[str]:
    """Every numeric metric path present in at least one run (for suggestions)."""
    names: set[str] = set()

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else key, sub)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            names.add(prefix)
    for run in runs:
        walk("", run.results.get("metrics", {}))
    return sorted(names)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def write_output(path: Path, text: str, flag: str) -> bool:
    """Write a report's ``text`` to ``path`` atomically; on failure print one line naming ``flag`` and return False."""
    from utils.atomic import write_text
    from utils.errors import UserError
    try:
        if path.is_dir():
            raise UserError(f"{path} is a directory")
        write_text(path, text)
    except UserError as err:
        print(f"error: {flag}: {err}", file=sys.stderr)
        return False
    return True


def output_dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a directory of outputs (a file, or not writable), or None."""
    from utils.atomic import check_output_dir
    from utils.errors import UserError
    try:
        check_output_dir(str(path), "--out")
    except UserError as err:
        return str(err)
    return None
