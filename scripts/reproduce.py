"""Reproduce a published table: write its sweep, run or submit it, print the results beside the paper's numbers.

Usage:
  python scripts/reproduce.py --list 1
  python scripts/reproduce.py NAME --dry_run 1                     # the exact commands, nothing run
  python scripts/reproduce.py NAME --data_path DATA [--seeds 0 1 2] [--results_path results/reproduce/NAME]
                              [--launcher local --jobs 1 | --launcher slurm --partition P ...]

Each table is a sweep (``scripts/sweep.py``) of the methods' ``--model_config best`` recipes (``models/config/``)
over the seeds the paper averaged; ``RESULTS/grid.yaml`` and ``RESULTS/commands.sh`` record it. A rerun skips the
finished runs and resumes the others; when every run of a row has finished, the table shows it beside the
reported numbers, which are marked as reported and cite where they come from (``../shared/reference/``); a number
no source gave is shown as ``–`` and never filled in.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils import sweep  # noqa: E402
from utils.errors import UserError  # noqa: E402

import sweep as sweep_script  # noqa: E402  (scripts/sweep.py, next to this file)

CLAP_SOURCE = ("CLAP4CLIP (NeurIPS 2024) Table 1, ViT-B/16, mean of 3 runs, as quoted by secondary sources: "
               "shared/reference/clap4clip.md section 6 (the table was seen only as an image; check against the PDF)")
ZSCL_MTIL_SOURCE = ("ZSCL (ICCV 2023) Table 1, ViT-B/16, the numbers stored in its mtil/results.ipynb: "
                    "shared/reference/zscl_mtil.md section 3.4")
ZSCL_CIL_SOURCE = ("ZSCL (ICCV 2023) class-incremental CIFAR-100 table, ViT-B/16: shared/reference/zscl_mtil.md "
                   "section 3.5 (10-step Avg confirmed by a secondary source; the other numbers recalled, unverified)")
SYNTH_MTIL_SOURCE = ("Tusk's README (the ZSCL family's synth-mtil table, world version 3, seeds 0-2, measured "
                     "2026-12-04 on a CPU: identical for the same packages and CPU, the last digits can move on "
                     "another CPU); a row the README did not measure is shown as -")
CGIL_SOURCE = ("CGIL (BMVC 2024): its tables were not retrieved (shared/reference/cgil_coop_maple_attriclip.md section "
               "1.12), so no number is shown")
MTIL = (("task_il.mtil.transfer", "Transfer"), ("task_il.mtil.avg", "Avg"), ("task_il.mtil.last", "Last"))
CIL = (("avg_accuracy", "Avg"), ("last_accuracy", "Last"))
CGIL_METRICS = (("last_accuracy", "Last"), ("avg_accuracy", "Avg"), ("future_transfer", "Transfer"))


@dataclass
class Row:
    label: str
    options: dict[str, Any]                 # one cell per seed: these options + --seed S
    reported: dict[str, float | None] = field(default_factory=dict)


@dataclass
class Table:
    name: str
    title: str
    metrics: tuple[tuple[str, str], ...]
    rows: list[Row]
    seeds: tuple[int, ...]
    source: str


def _mtil(order: str, reported: dict[str, tuple[float | None, float | None, float | None]], dataset: str = "mtil"
          ) -> Table:
    """ZSCL's Table 1 rows (zero-shot, Continual-FT, LwF, iCaRL, LwF-VR, WiSE-FT, ZSCL) on ``dataset``: ``mtil``
    (ViT-B/16, ZSCL's numbers, one run each) or ``synth-mtil`` (micro-clip, the README's, seeds 0-2)."""
    real = dataset == "mtil"
    zero_shot = {"backbone": "ViT-B/16"} if real else {}
    def rep(key):
        return dict(zip((m for m, _ in MTIL), reported.get(key, (None, None, None))))
    def best(model, **extra):
        return {"model": model, "dataset": dataset, "model_config": "best", **extra, "mtil_order": order}
    name, title = ((f"zscl-mtil-{order}", f"ZSCL's MTIL benchmark, order {order} (11 datasets, ViT-B/16), task-IL")
                   if real else (f"synth-mtil-{order}", f"the ZSCL family on synth-mtil, order {order} (7 synthetic "
                                 "datasets, micro-clip, offline on a CPU), task-IL"))
    return Table(
        name, title, MTIL,
        [Row("Zero-shot", {"model": "zeroshot-clip", "dataset": dataset, **zero_shot, "eval_future": True,
                           "mtil_order": order}, rep("zero-shot")),
         Row("Continual-FT", best("finetune"), rep("finetune")),
         Row("LwF", best("lwf-clip"), rep("lwf-clip")),
         Row("iCaRL", best("icarl-clip"), rep("icarl-clip")),
         Row("LwF-VR", best("lwf-vr"), rep("lwf-vr")),
         # WiSE_finetune.sh: --method finetune --wise_merge --wise_ft_model n --wise_ft_alpha 0.8
         Row("WiSE-FT", best("finetune", wise_merge=0.8, wise_ft_model="prev"), rep("wise-ft")),
         Row("ZSCL", best("zscl"), rep("zscl"))],
        (0,) if real else (0, 1, 2), ZSCL_MTIL_SOURCE if real else SYNTH_MTIL_SOURCE)


def _cgil(dataset: str) -> Table:
    return Table(f"cgil-{dataset.removeprefix('seq-')}", f"CGIL on mammoth's {dataset} (ViT-L/14, fp32), class-IL",
                 CGIL_METRICS,
                 [Row("CGIL", {"model": "cgil", "dataset": dataset, "model_config": "best"})],
                 (1992, 1996, 1997), CGIL_SOURCE)


def tables() -> dict[str, Table]:
    out = [
        Table("clap4clip-cifar100", "CLAP4CLIP on CIFAR-100, 10 tasks (ViT-B/16), class-IL", CIL,
              [Row("CLAP", {"model": "clap4clip", "dataset": "seq-cifar100", "model_config": "best"},
                   {"avg_accuracy": 86.13, "last_accuracy": 78.21}),
               Row("CLIP-Adapter", {"model": "clip-adapter", "dataset": "seq-cifar100", "model_config": "best"})],
              (0, 1, 2), CLAP_SOURCE + "; Last 78.21 is low confidence"),
        Table("clap4clip-imagenet-r", "CLAP4CLIP on ImageNet-R, 10 tasks of 20 (ViT-B/16, CLAP4CLIP's split), class-IL",
              CIL,
              [Row("CLAP", {"model": "clap4clip", "dataset": "seq-imagenet-r", "model_config": "best"},
                   {"avg_accuracy": 85.77, "last_accuracy": None})],
              (0, 1, 2), CLAP_SOURCE + "; only Avg was quoted"),
        _mtil("I", {"zero-shot": (69.4, 65.3, 65.3), "finetune": (44.6, 55.9, 77.3), "lwf-clip": (56.9, 64.7, 74.6),
                    "icarl-clip": (50.4, 65.7, 80.1), "lwf-vr": (57.2, 65.1, 76.6), "wise-ft": (52.3, 60.7, 77.7),
                    "zscl": (68.1, 75.4, 83.6)}),
        _mtil("II", {"zero-shot": (65.4, 65.3, 65.3), "finetune": (46.6, 56.2, 67.4), "lwf-clip": (53.2, 62.2, 71.9),
                     "icarl-clip": (50.9, 56.9, 71.6), "lwf-vr": (53.1, 60.6, 68.3), "wise-ft": (51.0, 61.5, 72.2),
                     "zscl": (64.2, 74.5, 83.4)}),
        _mtil("I", {"zero-shot": (50.22, 44.63, 44.63), "finetune": (43.02, 48.44, 50.03),
                    "lwf-clip": (49.34, 53.76, 55.94), "icarl-clip": (45.46, 50.18, 54.53),
                    "lwf-vr": (49.30, 53.23, 54.55), "wise-ft": (44.66, 50.47, 54.56), "zscl": (49.27, 50.43, 55.14)},
              "synth-mtil"),
        _mtil("II", {"zero-shot": (49.07, 44.63, 44.63), "finetune": (41.55, 49.00, 57.00),
                     "zscl": (47.68, 50.01, 54.51)}, "synth-mtil"),
        Table("zscl-cifar100", "ZSCL class-incremental on CIFAR-100 (ViT-B/16, ZSCL's class order), class-IL", CIL,
              [Row(f"ZSCL, {n} steps", {"model": "zscl", "dataset": "seq-cifar100", "model_config": "best",
                                        "cifar100_tasks": n}, dict(zip(("avg_accuracy", "last_accuracy"), rep)))
               for n, rep in ((10, (82.15, 73.65)), (20, (80.39, 69.58)), (50, (79.92, 67.36)))],
              (0,), ZSCL_CIL_SOURCE),
        *[_cgil(d) for d in ("seq-imagenet-r", "seq-cars196", "seq-cub200", "seq-eurosat")],
    ]
    return {t.name: t for t in out}


def row_cells(table: Table, row: Row, seeds, extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**row.options, **extra, "seed": s} for s in seeds]


def grid_of(table: Table, seeds, extra: dict[str, Any]) -> list[dict[str, Any]]:
    """The sweep's grid: one mapping per row, seeds as its list."""
    return [{**row.options, **extra, "seed": list(seeds)} for row in table.rows]


# ---- the report ----------------------------------------------------------------------------
def report(table: Table, seeds, extra: dict[str, Any], results_path: str) -> str:
    """Markdown: for each row, this sweep's finished runs (mean ± sample std over seeds) and the reported numbers."""
    from utils.reports import load_runs, mean_std
    import numpy as np
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = load_runs([results_path], include_incomplete=True) if Path(results_path).exists() else []
    by_key = {sweep.cell_key(r.config.get("argv") or []): r for r in runs}
    head = ["row", "", "seeds", *[label for _, label in table.metrics]]
    lines = [f"{table.name}: {table.title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table.rows:
        done = []
        for cell in row_cells(table, row, seeds, extra):
            run = by_key.get(sweep.cell_key(sweep.cell_argv(cell)))
            if run is not None and run.status == "completed":
                done.append(run)
        cells = []
        for metric, _ in table.metrics:
            values = np.array([v for v in (r.metric(metric) for r in done) if v is not None], dtype=float)
            std = float(values.std(ddof=1)) if values.size > 1 else float("nan")
            cells.append(mean_std(float(values.mean()) if values.size else float("nan"), std, int(values.size)))
        n = f"{len(done)} of {len(seeds)} runs" if len(done) < len(seeds) else ",".join(map(str, seeds))
        lines.append(f"| {row.label} | this sweep | {n} | " + " | ".join(cells) + " |")
        reported = [row.reported.get(m) for m, _ in table.metrics]
        lines.append(f"| {row.label} | reported | – | " +
                     " | ".join("–" if v is None else f"{v:g}" for v in reported) + " |")
    lines += ["", f"Reported: {table.source}.", f"Runs: {results_path} (python scripts/leaderboard.py "
              f"{shlex.quote(str(results_path))} has every metric)."]
    return "\n".join(lines) + "\n"


def write_sweep(table: Table, grid: list[dict[str, Any]], argvs: list[list[str]], results_path: Path) -> None:
    import yaml
    from utils.atomic import write_text
    results_path.mkdir(parents=True, exist_ok=True)
    write_text(results_path / "grid.yaml", f"# {table.name}: {table.title}\n# python scripts/sweep.py "
               f"{results_path / 'grid.yaml'} --results_path {results_path}\n" + yaml.safe_dump(grid, sort_keys=False))
    write_text(results_path / "commands.sh", "#!/bin/sh\n# " + f"{table.name}: {table.title}\n" +
               "".join("python main.py " + shlex.join(a) + "\n" for a in argvs))


# ---- the command line ----------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("name", nargs="?", help="the table (--list 1 lists them)")
    p.add_argument("--list", type=int, choices=(0, 1), default=0, help="1: list the tables and exit")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: the paper's runs)")
    p.add_argument("--data_path", default=None, help="passed to every run (where the datasets are)")
    sweep_script.add_launch_arguments(p)
    p.set_defaults(results_path=None)
    return p


def unknown_name(name: str, known) -> UserError:
    import difflib
    close = difflib.get_close_matches(name, known, n=1)
    return UserError(f"unknown table '{name}'." + (f" Did you mean '{close[0]}'?" if close else "") +
                     f" Tables: {', '.join(known)}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    known = tables()
    try:
        if args.list:
            width = max(map(len, known))
            for t in known.values():
                runs = len(t.rows) * len(t.seeds)
                print(f"{t.name:<{width}}  {t.title}; {runs} run(s), seeds {','.join(map(str, t.seeds))}")
            return 0
        if not args.name:
            raise UserError("name a table (python scripts/reproduce.py --list 1 lists them)")
        if args.name.startswith("cgil-seq-"):          # cgil-<Tusk's dataset name> works too
            args.name = "cgil-" + args.name.removeprefix("cgil-seq-")
        if args.name not in known:
            raise unknown_name(args.name, list(known))
        table = known[args.name]
        seeds = tuple(args.seeds or table.seeds)
        extra = {"data_path": args.data_path} if args.data_path else {}
        args.results_path = args.results_path or str(Path("results") / "reproduce" / table.name)
        sweep_script.check_launch_arguments(args)
        grid = grid_of(table, seeds, extra)
        cells = sweep.cells(grid)
        argvs = [sweep.run_argv(c, args.results_path) for c in cells]
        sweep.validate(argvs)                           # every command resolves (offline: nothing is read)
        if args.dry_run:
            for a in argvs:
                print("python main.py " + shlex.join(a))
            return 0
        write_sweep(table, grid, argvs, Path(args.results_path))
        code = sweep_script.launch(cells, args)
        print()
        print(report(table, seeds, extra, args.results_path), end="")
        return code
    except UserError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to continue (finished runs are skipped, the others resumed)",
              file=sys.stderr)
        sys.exit(130)
