"""Where the forgetting comes from: which task costs which earlier dataset, from the runs' accuracy matrices.

Usage:
  python scripts/interference.py RUN_DIRS_OR_ROOTS... [--which task_il|class_il] [--include-incomplete]

For each setting (runs grouped as by ``scripts/leaderboard.py``, typically one run per seed), on the mean accuracy
matrix A over its runs (A[t, d]: accuracy on task d after training task t):

* the MTIL summary when the runs have one (``metrics.<which>.mtil``: Transfer / Avg / Last, mean ± sample std);
* each task's accuracy right after it trained (the diagonal) and after the last task (the last row), and the
  forgetting: the mean over every task but the last of the diagonal minus the last row;
* the interference table: the change of each earlier task's accuracy when task t trains, A[t, d] - A[t-1, d]
  for d < t, one row per trained task, and the largest costs.

Tasks are named by ``results.json``'s ``task_names`` (sequences of named datasets: ``mtil``, ``synth-mtil``),
else numbered. The README's synth-mtil analysis (finetune section) comes from this script.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils import metrics  # noqa: E402
from utils.reports import Group, group_runs, load_runs_for_cli, mean_std  # noqa: E402


def task_names(group: Group, n: int) -> list[str]:
    names = group.runs[0].results.get("task_names") or []
    return list(names) if len(names) == n else [f"task {i + 1}" for i in range(n)]


def report(group: Group, which: str, top: int = 5) -> str:
    A = group.mean_matrix(which)
    if A.size == 0 or A.shape[0] != A.shape[1]:
        return f"{group.dataset} · {group.name}: no complete {which} accuracy matrix\n"
    names = task_names(group, A.shape[1])
    width = max(8, *(len(n) for n in names))          # one column per task
    label = max(len("after its task"), width)
    seeds = ",".join(str(s) for s in group.seeds())
    lines = [f"{group.dataset} · {group.name} · {group.backbone} · seeds {seeds} · {which}"]
    prefix = "task_il." if which == "task_il" else ""          # class-IL metrics sit at the top of ``metrics``
    if group.stats(f"{prefix}mtil.transfer")[2]:
        lines.append("Transfer / Avg / Last: " + " / ".join(mean_std(*group.stats(f"{prefix}mtil.{k}"))
                                                            for k in ("transfer", "avg", "last")))
    lines.append(f"{'':{label}s} " + " ".join(f"{n:>{width}s}" for n in names))
    lines.append(f"{'after its task':{label}s} " + " ".join(f"{v:{width}.1f}" for v in np.diag(A)))
    lines.append(f"{'after the last':{label}s} " + " ".join(f"{v:{width}.1f}" for v in A[-1]))
    lines.append(f"forgetting (after its task - after the last, mean over all but the last task): {metrics.diagonal_forgetting(A):.1f}")
    D = metrics.interference(A)
    lines.append("change of each earlier task when a task trains (rows: the task trained):")
    for t in range(1, A.shape[0]):
        lines.append(f"  {names[t]:{width}s} " + "  ".join(f"{names[d]} {D[t, d]:+.1f}" for d in range(t)))
    costs = sorted(((D[t, d], names[t], names[d]) for t in range(1, A.shape[0]) for d in range(t)),
                   key=lambda c: c[0])[:top]
    lines.append("largest costs: " + ", ".join(f"{a} -> {b} {v:+.1f}" for v, a, b in costs if v < 0))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("paths", nargs="+", help="run directories or folders holding them")
    p.add_argument("--which", choices=("task_il", "class_il"), default="task_il",
                   help="which accuracy matrix (default task_il: each task's own classes, as MTIL)")
    p.add_argument("--top", type=int, default=5, help="how many of the largest costs to list")
    p.add_argument("--include-incomplete", "--include_incomplete", action="store_true",
                   help="also runs that did not finish (their matrices are shorter)")
    args = p.parse_args(argv)
    runs = load_runs_for_cli(args.paths, args.include_incomplete)
    if runs is None:
        return 2
    print("\n".join(report(g, args.which, args.top) for g in group_runs(runs)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
