"""Run a grid of options: every combination is a normal run (``python main.py ...``), here or on SLURM.

Usage:
  python scripts/sweep.py GRID.yaml [--results_path results] --launcher local [--jobs 2]
  python scripts/sweep.py GRID.yaml --launcher slurm [--partition P] [--gpus_per_job 1] [--time 1440]
                          [--array_parallelism 256] [--cpus_per_job 8] [--mem_gb N] [--wait 1]
  python scripts/sweep.py GRID.yaml --dry_run 1        # print the cells' commands only

GRID.yaml maps option names to a value or a list of values; the cells are the product of the lists::

    model: [er, derpp]
    dataset: seq-synth
    buffer_size: 500
    seed: [0, 1, 2]

A rerun of the same sweep skips the finished cells and resumes the interrupted ones (see ``utils/sweep.py``), so
after a crash, a Ctrl-C or a preemption the same command continues. Exit code: 0 when every cell has finished
(completed, stopped at its own --stop_after, or diverged), 1 otherwise, 2 on a bad grid or option.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils import sweep  # noqa: E402
from utils.errors import UserError  # noqa: E402


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("grid", help="the grid: a YAML mapping of option names to a value or a list of values")
    add_launch_arguments(p)
    return p


def add_launch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results_path", default="results", help="passed to every run (default: results)")
    p.add_argument("--launcher", choices=("local", "slurm"), default="local")
    p.add_argument("--jobs", type=int, default=1, help="local: cells run at once (default 1)")
    p.add_argument("--partition", default=None, help="slurm: the partition (default: the cluster's)")
    p.add_argument("--gpus_per_job", type=int, default=1, help="slurm: GPUs per cell (default 1; above 1 the cell "
                   "runs under torchrun, one DDP process per GPU)")
    p.add_argument("--cpus_per_job", type=int, default=8, help="slurm: CPUs per cell (default 8)")
    p.add_argument("--mem_gb", type=int, default=None, help="slurm: memory per cell in GB (default: the cluster's)")
    p.add_argument("--time", type=int, default=1440, help="slurm: minutes per job before it is stopped, saved and "
                                                         "requeued (default 1440)")
    p.add_argument("--array_parallelism", type=int, default=256, help="slurm: jobs of the array running at once")
    p.add_argument("--wait", type=int, choices=(0, 1), default=0,
                   help="slurm: 1 waits for the jobs and prints each cell's outcome (default: submit and return)")
    p.add_argument("--submitit_cluster", choices=("slurm", "local", "debug"), default="slurm",
                   help="slurm: submitit's executor; 'local' and 'debug' run the jobs on this machine (to try the "
                        "SLURM path without a cluster)")
    p.add_argument("--dry_run", type=int, choices=(0, 1), default=0, help="1: print the commands, run nothing")


def check_launch_arguments(args) -> None:
    for name in ("jobs", "gpus_per_job", "cpus_per_job", "time", "array_parallelism"):
        value = getattr(args, name)
        if value < (0 if name == "gpus_per_job" else 1):
            raise UserError(f"--{name} {value}: must be at least {0 if name == 'gpus_per_job' else 1}")
    if args.mem_gb is not None and args.mem_gb < 1:
        raise UserError(f"--mem_gb {args.mem_gb}: must be at least 1")
    problem = _results_path_problem(args.results_path)
    if problem:
        raise UserError(f"--results_path {args.results_path}: {problem}")


def _results_path_problem(path: str) -> str | None:
    from utils.reports import output_dir_problem
    from pathlib import Path
    if not path.strip():
        return "an empty path"
    return output_dir_problem(Path(path))


def launch(cells: list[dict], args, out=print) -> int:
    """Validate, then run or submit ``cells`` as ``args`` says; returns the exit code."""
    argvs = [sweep.run_argv(cell, args.results_path) for cell in cells]
    if args.dry_run:
        for argv in argvs:
            out("python main.py " + shlex.join(argv))
        return 0
    sweep.validate(argvs)
    n = len(argvs)
    collected: list[sweep.CellResult | None] = [None] * n

    def report(i: int, result: sweep.CellResult) -> None:
        collected[i] = result
        out(f"[{i + 1}/{n}] {result.line()}")

    if args.launcher == "local":
        sweep.run_local(argvs, args.results_path, args.jobs, report)
    else:
        executor = sweep.submitit_executor(args.results_path, args.submitit_cluster, args.partition,
                                           args.gpus_per_job, args.time, args.array_parallelism, args.cpus_per_job,
                                           args.mem_gb)
        # several GPUs per cell: the run is one DDP run over them (torchrun), not several runs
        jobs = sweep.submit_slurm(argvs, args.results_path, executor, report, nproc=max(1, args.gpus_per_job))
        for i, job in jobs:
            out(f"[{i + 1}/{n}] submitted as job {job.job_id}: {' '.join(sweep.cell_key(argvs[i]))}")
        if jobs and not args.wait:
            out(f"{len(jobs)} job(s) submitted; their logs: {args.results_path}/.submitit/. Rerun this command when "
                f"they end: it skips the finished cells and resumes the others.")
            return 0
        sweep.wait_jobs(jobs, argvs, report)
    done, missing = sweep.results_summary(collected)
    out(f"{done} of {n} cells finished" + (f"; {missing} not: rerun this command to continue them" if missing
                                            else "") + f". Leaderboard: python scripts/leaderboard.py "
        f"{shlex.quote(args.results_path)}")
    return 0 if missing == 0 else 1


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        check_launch_arguments(args)
        cells = sweep.cells(sweep.load_grid(args.grid))
        return launch(cells, args)
    except UserError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to continue (finished cells are skipped, the others resumed)",
              file=sys.stderr)
        sys.exit(130)
