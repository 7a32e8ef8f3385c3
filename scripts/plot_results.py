"""Plots of one run or many: accuracy-matrix heatmaps, accuracy after each task, reliability diagrams.

Usage:
  python scripts/plot_results.py RUN_DIRS_OR_ROOTS... --out DIR [--which class_il|task_il] [--include-incomplete]

Writes ``DIR/heatmap.png`` (one panel per setting: the accuracy matrix, mean over its runs),
``DIR/curves.png`` (accuracy after each task, one line per setting, mean ± std over runs as a band) and
``DIR/reliability.png`` (per setting: accuracy against confidence after the last task, bins pooled over
runs, ECE in the title). Runs are grouped as by ``scripts/leaderboard.py`` (``utils/reports.py``).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")                    # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.metrics import ece_from_diagram  # noqa: E402
from utils.reports import Group, group_runs, load_runs_for_cli, output_dir_problem  # noqa: E402

MAX_PANELS = 12
LABELS = {"class_il": "class-IL", "task_il": "task-IL"}


def _title(g: Group) -> str:
    return f"{g.dataset} · {g.name} · n={len(g.runs)}"


def _panels(n: int, size: float = 4.0):
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def heatmap(groups: list[Group], which: str, path: Path) -> None:
    fig, axes = _panels(len(groups))
    for ax, g in zip(axes, groups):
        A = g.mean_matrix(which)
        im = ax.imshow(np.ma.masked_invalid(A), vmin=0, vmax=100, cmap="viridis")
        if A.size and max(A.shape) <= 12:
            for (t, k), v in np.ndenumerate(A):
                if not np.isnan(v):
                    ax.text(k, t, f"{v:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if v < 60 else "black")
        ax.set_xlabel("task evaluated")
        ax.set_ylabel("after training task")
        ax.set_xticks(range(A.shape[1]), [str(i + 1) for i in range(A.shape[1])], fontsize=7)
        ax.set_yticks(range(A.shape[0]), [str(i + 1) for i in range(A.shape[0])], fontsize=7)
        ax.set_title(_title(g), fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046, label=f"{LABELS[which]} accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curves(groups: list[Group], which: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for g in groups:
        S = g.step_accuracies(which)
        if S.size == 0:
            continue
        x = np.arange(1, S.shape[1] + 1)
        mean = np.nanmean(S, axis=0)
        (line,) = ax.plot(x, mean, marker="o", ms=3, label=f"{g.name} [{g.dataset}] n={len(g.runs)}")
        if S.shape[0] > 1:
            std = np.nanstd(S, axis=0, ddof=1)
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("after training task")
    ax.set_ylabel(f"{LABELS[which]} accuracy on seen tasks (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("accuracy after each task (mean of per-task accuracies; band = ± std over runs)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reliability(groups: list[Group], path: Path) -> None:
    data = [(g, g.reliability()) for g in groups]
    data = [(g, d) for g, d in data if d is not None]
    if not data:
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.axis("off")
        ax.text(0.5, 0.5, "no calibration data in these runs\n(they ran with --compute_ece 0)",
                ha="center", va="center")
    else:
        fig, axes = _panels(len(data))
        for ax, (g, d) in zip(axes, data):
            edges = d["bin_edges"]
            width = np.diff(edges)
            acc = np.nan_to_num(d["accuracy"])
            ax.bar(edges[:-1], acc, width=width, align="edge", edgecolor="black", linewidth=0.5,
                   label="accuracy")
            conf = d["confidence"]
            gap = np.where(np.isnan(conf), 0.0, conf - acc)
            ax.bar(edges[:-1], gap, bottom=acc, width=width, align="edge", color="tab:red", alpha=0.3,
                   label="gap to confidence")
            ax.plot([0, 100], [0, 100], "k--", linewidth=0.8)
            ax.set_xlim(0, 100)
            ax.set_ylim(0, 100)
            ax.set_xlabel("confidence (%)")
            ax.set_ylabel("accuracy (%)")
            ax.set_title(f"{g.dataset} · {g.name} · n={d['n_runs']}\nECE {ece_from_diagram(d):.2f} after the "
                         f"last task", fontsize=8)
            ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", help="run directories, or roots searched for results.json")
    parser.add_argument("--out", type=Path, required=True,
                        help="directory for heatmap.png, curves.png, reliability.png")
    parser.add_argument("--which", choices=tuple(LABELS), default="class_il", help="which accuracy matrix")
    parser.add_argument("--include-incomplete", action="store_true",
                        help="also plot stopped, interrupted or still-running runs (default: completed only)")
    args = parser.parse_args(argv)
    runs = load_runs_for_cli(args.paths, args.include_incomplete)
    if runs is None:
        return 2
    groups = group_runs(runs)
    if len(groups) > MAX_PANELS:
        print(f"note: {len(groups)} settings; the plots show the first {MAX_PANELS} (pass fewer runs to choose)",
              file=sys.stderr)
        groups = groups[:MAX_PANELS]
    problem = output_dir_problem(args.out)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        heatmap(groups, args.which, args.out / "heatmap.png")
        curves(groups, args.which, args.out / "curves.png")
        reliability(groups, args.out / "reliability.png")
    except OSError as err:
        print(f"error: --out {args.out}: cannot write the plots ({err.strerror or err})", file=sys.stderr)
        return 2
    for name in ("heatmap.png", "curves.png", "reliability.png"):
        print(args.out / name)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
