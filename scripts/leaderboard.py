"""A leaderboard from many runs: mean ± std over seeds per method × dataset × setting, as Markdown and CSV.

Usage:
  python scripts/leaderboard.py RUN_DIRS_OR_ROOTS... [--metric last_accuracy avg_accuracy ...]
                                [--out-md board.md] [--out-csv board.csv] [--include-incomplete]

Every ``results.json`` at or below the given paths is a run. Runs that differ only in their seed (or in
options that cannot change results, ``utils/reports.NOT_A_SETTING``) form one cell; the Markdown lists
each cell's command lines under the table and the CSV has them in a column. Metrics are dotted paths
into ``results.json``'s ``metrics`` (``task_il.last_accuracy``, ``mtil.transfer``, ``novelty.energy.auroc``).
"""
from __future__ import annotations

import argparse
import csv
import difflib
import io
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.reports import Group, group_runs, load_runs_for_cli, mean_std, metric_names, write_output  # noqa: E402

DEFAULT_METRICS = ("last_accuracy", "avg_accuracy", "bwt", "forgetting", "ece")


def _num(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.4f}"


def rank(groups: list[Group], metric_names: list[str]) -> list[Group]:
    """By dataset, then the first metric, best first (lower is better for forgetting, ECE and FPR)."""
    first = metric_names[0]
    sign = 1.0 if any(w in first for w in ("forgetting", "ece", "fpr")) else -1.0

    def key(g: Group):
        mean = g.stats(first)[0]
        return (g.dataset, math.isnan(mean), sign * mean if not math.isnan(mean) else 0.0, g.model, g.label)
    return sorted(groups, key=key)


def markdown(groups: list[Group], metric_names: list[str]) -> str:
    head = ["#", "dataset", "model", "backbone", "setting", "seeds", *metric_names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, g in enumerate(groups, 1):
        cells = [str(i), g.dataset, g.model, g.backbone, g.label or "–", ",".join(map(str, g.seeds()))]
        cells += [mean_std(*g.stats(m)) for m in metric_names]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", "mean ± sample std (ddof=1) over the runs of each row; step accuracies are means of per-task "
                  "accuracies (`metrics.averaging`).", "", "Commands:", ""]
    for i, g in enumerate(groups, 1):
        lines.append(f"{i}. " + "; ".join(f"`{c}`" for c in dict.fromkeys(g.commands())))
    return "\n".join(lines) + "\n"


def csv_text(groups: list[Group], metric_names: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["dataset", "model", "backbone", "setting", "n_runs", "seeds",
                     *[f"{m}_{s}" for m in metric_names for s in ("mean", "std", "n")], "commands", "run_dirs"])
    for g in groups:
        row = [g.dataset, g.model, g.backbone, g.label, len(g.runs), " ".join(map(str, g.seeds()))]
        for m in metric_names:
            mean, std, n = g.stats(m)
            row += [_num(mean), _num(std), n]
        row += [" ; ".join(dict.fromkeys(g.commands())), " ; ".join(str(r.path) for r in g.runs)]
        writer.writerow(row)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", help="run directories, or roots searched for results.json")
    parser.add_argument("--metric", nargs="+", default=None,
                        help="metrics (dotted paths into results.json 'metrics'); default: "
                             f"{' '.join(DEFAULT_METRICS)} "
                             "(those no run has are left out)")
    parser.add_argument("--out-md", type=Path, help="also write the Markdown table here")
    parser.add_argument("--out-csv", type=Path, help="write the CSV table here")
    parser.add_argument("--include-incomplete", action="store_true",
                        help="also use stopped, interrupted or still-running runs (default: completed only)")
    args = parser.parse_args(argv)
    runs = load_runs_for_cli(args.paths, args.include_incomplete)
    if runs is None:
        return 2
    groups = group_runs(runs)
    names = args.metric or [m for m in DEFAULT_METRICS if any(r.metric(m) is not None for r in runs)]
    known = metric_names(runs)
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3)
            print(f"error: no run has the metric '{name}'" + (f"; did you mean {', '.join(close)}?" if close else
                  f"; metrics: {', '.join(known)}"), file=sys.stderr)
            return 2
    groups = rank(groups, names)
    md = markdown(groups, names)
    print(md, end="")
    if args.out_md and not write_output(args.out_md, md, "--out-md"):
        return 2
    if args.out_csv and not write_output(args.out_csv, csv_text(groups, names), "--out-csv"):
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
