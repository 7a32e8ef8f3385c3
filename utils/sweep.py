"""Sweeps: the product of a grid of options, each cell a normal run, run here (``local``) or on SLURM (``slurm``).

A grid is a YAML mapping from option names (``model``, ``dataset``, ``seed``, any flag without its ``--``) to a value
or a list of values; the cells are the product of the lists, in the file's order (a list of such mappings is the
union of their products; a value that is itself a list, for a list option, is written as a nested list). Every cell
is ``python main.py --OPTION VALUE ... --results_path RESULTS --quiet 1``, so it writes a normal run directory.

A cell is found again by its command line, which the run records in ``config.json`` (``argv``, compared without
``--results_path`` and ``--quiet``): a rerun of the sweep skips the cells whose run ended (completed, stopped at its
own ``--stop_after``, diverged), continues with ``--resume`` those that were stopped on the way (preempted, killed,
interrupted), skips those another process is running (the run's ``.lock``) and starts the others.

Launchers: ``local`` runs ``--jobs N`` cells at once in worker processes that import Tusk once each and run cells
one after the other (``main.main``); ``slurm`` submits one job per cell through submitit (a job array), each job
running ``python main.py`` as a child process; on preemption or time-out (submitit's USR2) the job stops the run
(SIGTERM: it saves its state), and requeues itself, and the requeued job continues the run with ``--resume``.
This module imports neither torch nor Tusk's models at import time, so that a SLURM job starts fast.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from utils.errors import UserError

REPO = Path(__file__).resolve().parent.parent
RESERVED = {"results_path": "the sweep's --results_path is passed to every run",
            "resume": "the sweep resumes the cells that need it by itself"}
LOGS = "sweep_logs"
#: Run statuses after which a cell is done (a rerun of the same command would not change it).
FINISHED = ("completed", "stopped", "diverged")


# ---- grids ---------------------------------------------------------------------------------
def load_grid(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The grid file's mappings (one, or a list of them), checked: names are strings, values scalars or lists."""
    import yaml
    path = Path(path)
    try:
        blob = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UserError(f"grid {path}: cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"grid {path}: not valid YAML ({' '.join(str(exc).split())[:200]})") from None
    grids = blob if isinstance(blob, list) else [blob]
    if not grids or not all(isinstance(g, dict) and g for g in grids):
        raise UserError(f"grid {path}: expected a mapping of option names to a value or a list of values "
                        f"(or a list of such mappings)")
    for g in grids:
        check_grid(g, str(path))
    return grids


def check_grid(grid: dict[str, Any], where: str) -> None:
    for name, value in grid.items():
        if not isinstance(name, str) or not name.strip():
            raise UserError(f"grid {where}: option names are strings, not {name!r}")
        key = name.lstrip("-").replace("-", "_")
        if key in RESERVED:
            raise UserError(f"grid {where}: '{name}' cannot be in a grid ({RESERVED[key]})")
        values = value if isinstance(value, list) else [value]
        if not values:
            raise UserError(f"grid {where}: '{name}' has an empty list of values")
        for v in values:
            items = v if isinstance(v, list) else [v]
            if any(isinstance(i, (dict, list)) or i is None for i in items):
                raise UserError(f"grid {where}: '{name}' has a value that is not a number, a string or a boolean: "
                                f"{v!r}")
    for required in ("model", "dataset"):
        if required not in {n.lstrip("-").replace("-", "_") for n in grid}:
            raise UserError(f"grid {where}: every grid needs '{required}'")


def cells(grids: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The product of each grid's lists, grids one after the other, duplicates dropped (first kept)."""
    out, seen = [], set()
    for grid in grids:
        names = list(grid)
        axes = [grid[n] if isinstance(grid[n], list) else [grid[n]] for n in names]
        for combo in itertools.product(*axes):
            cell = dict(zip(names, combo))
            key = tuple(cell_argv(cell))
            if key not in seen:
                seen.add(key)
                out.append(cell)
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def cell_argv(cell: dict[str, Any]) -> list[str]:
    """``main.py``'s arguments for a cell (without ``--results_path``/``--quiet``)."""
    argv = []
    for name, value in cell.items():
        argv.append("--" + name.lstrip("-"))
        argv += [_text(v) for v in value] if isinstance(value, list) else [_text(value)]
    return argv


def run_argv(cell: dict[str, Any], results_path: str) -> list[str]:
    argv = cell_argv(cell)
    if not any(a in ("--quiet",) for a in argv):
        argv += ["--quiet", "1"]
    return [*argv, "--results_path", str(results_path)]


def cell_key(argv: Sequence[str]) -> tuple[str, ...]:
    """A run's identity within a sweep: its command line without ``--results_path`` and ``--quiet``."""
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a in ("--results_path", "--results-path", "--quiet"):
            skip = i + 1 < len(argv) and not argv[i + 1].startswith("--")
            continue
        out.append(a)
    return tuple(out)


def cell_id(argv: Sequence[str]) -> str:
    return hashlib.sha1(json.dumps(cell_key(argv)).encode()).hexdigest()[:12]


def validate(argvs: Sequence[Sequence[str]]) -> None:
    """Resolve every cell's options as main.py would (unknown flags, bad values) before anything is launched."""
    from utils.config import parse_config
    from utils.options import canonical_flags, check_repeated
    for i, argv in enumerate(argvs, 1):
        try:
            check_repeated(canonical_flags(list(argv)))
            parse_config(list(argv))
        except UserError as err:
            raise UserError(f"cell {i} ({' '.join(cell_key(argv))}): {' '.join(str(err).split())}") from None


# ---- finding a cell's run ------------------------------------------------------------------
@dataclass
class CellState:
    """What a cell needs: ``skip`` (finished, or running elsewhere), ``resume`` (``run_dir``) or ``fresh``."""
    action: str
    status: str | None = None
    run_dir: Path | None = None


def _read_json(path: Path) -> dict | None:
    try:
        blob = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return blob if isinstance(blob, dict) else None


def index_runs(results_path: str | os.PathLike) -> dict[tuple[str, ...], list[Path]]:
    """{cell key: run directories} of the runs below ``results_path`` (``<dataset>/<model>/<run>/config.json``)."""
    out: dict[tuple[str, ...], list[Path]] = {}
    for config in sorted(Path(results_path).glob("*/*/*/config.json")):
        blob = _read_json(config)
        if blob is not None and isinstance(blob.get("argv"), list):
            out.setdefault(cell_key(blob["argv"]), []).append(config.parent)
    return out


def _locked(run_dir: Path) -> bool:
    lock = run_dir / ".lock"
    if not lock.exists():
        return False
    try:
        with open(lock, "a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    except OSError:
        return True
    return False


def cell_state(argv: Sequence[str], index: dict[tuple[str, ...], list[Path]]) -> CellState:
    runs = index.get(cell_key(argv), [])
    statuses = [((_read_json(d / "results.json") or {}).get("status"), d) for d in runs]
    for status, run_dir in statuses:
        if status in FINISHED:
            return CellState("skip", status, run_dir)
    for status, run_dir in reversed(statuses):        # the newest (directories are named by time) first
        if _locked(run_dir):
            return CellState("skip", "running elsewhere", run_dir)
    if statuses:
        status, run_dir = statuses[-1]
        return CellState("resume", status or "not started", run_dir)
    return CellState("fresh")


def command(argv: Sequence[str], state: CellState) -> list[str]:
    """``main.py``'s arguments that do what ``state`` says for the cell ``argv``."""
    if state.action == "resume":
        return ["--resume", str(state.run_dir), "--quiet", "1"]
    return list(argv)


# ---- running one cell ----------------------------------------------------------------------
@dataclass
class CellResult:
    argv: list[str]
    action: str
    status: str | None
    run_dir: str | None
    returncode: int | None = None
    log: str | None = None

    def line(self) -> str:
        what = {"skip": "skipped", "resume": "resumed", "fresh": "ran"}[self.action]
        rc = "" if self.returncode in (None, 0) else f", exit {self.returncode}"
        return f"{what} ({self.status or 'no run directory'}{rc}): {' '.join(cell_key(self.argv))}" + \
            (f" -> {self.run_dir}" if self.run_dir else "") + \
            (f" (log: {self.log})" if self.returncode not in (None, 0) and self.log else "")


def log_path(results_path: str, argv: Sequence[str]) -> Path:
    return Path(results_path) / LOGS / f"{cell_id(argv)}.log"


def run_cell(argv: list[str], results_path: str, execute: Callable[[list[str], Path], int]) -> CellResult:
    """Skip, resume or start the cell ``argv`` (``run_argv``'s) with ``execute(main_argv, log) -> exit code``."""
    state = cell_state(argv, index_runs(results_path))
    if state.action == "skip":
        return CellResult(list(argv), "skip", state.status, str(state.run_dir))
    log = log_path(results_path, argv)
    log.parent.mkdir(parents=True, exist_ok=True)
    code = execute(command(argv, state), log)
    after = cell_state(argv, index_runs(results_path))
    status = after.status if after.run_dir is not None else None
    if after.action == "resume":        # the run directory exists but the run did not end
        status = after.status
    return CellResult(list(argv), state.action, status, str(after.run_dir) if after.run_dir else None, code,
                      str(log))


def execute_in_process(main_argv: list[str], log: Path) -> int:
    """``main.main(main_argv)`` in this process, its output appended to ``log``."""
    import main as tusk_main
    with open(log, "a") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        print(f"$ python main.py {' '.join(main_argv)}", flush=True)
        try:
            code = tusk_main.main(main_argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Exception:                      # noqa: BLE001 - a crash of one cell is that cell's result
            import traceback
            traceback.print_exc()
            code = 1
    return int(code or 0)


def _worker_init(threads: int) -> None:
    if "OMP_NUM_THREADS" not in os.environ:
        import torch
        torch.set_num_threads(threads)


def _run_local_cell(argv: list[str], results_path: str) -> CellResult:
    return run_cell(argv, results_path, execute_in_process)


def run_local(argvs: Sequence[list[str]], results_path: str, jobs: int,
              report: Callable[[int, CellResult], None]) -> list[CellResult]:
    """Every cell on this machine, ``jobs`` at once (worker processes forked from a server that imported Tusk once,
    or spawned where there is no forkserver; each worker gets ``cpu_count // jobs`` torch threads unless
    OMP_NUM_THREADS is set)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    index = index_runs(results_path)
    results: list[CellResult | None] = [None] * len(argvs)
    todo = []
    for i, argv in enumerate(argvs):
        state = cell_state(argv, index)
        if state.action == "skip":
            results[i] = CellResult(list(argv), "skip", state.status, str(state.run_dir))
            report(i, results[i])
        else:
            todo.append(i)
    if not todo:
        return results
    threads = max(1, (os.cpu_count() or 1) // jobs)
    if "forkserver" in multiprocessing.get_all_start_methods():
        # one process imports Tusk (and torch) once; each worker is a fork of it, before any thread pool started
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["main", "utils.config", "utils.experiment"])
    else:
        context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=context,
                               initializer=_worker_init, initargs=(threads,))
    try:
        futures = {pool.submit(_run_local_cell, list(argvs[i]), results_path): i for i in todo}
        for future in as_completed(futures):
            i = futures[future]
            results[i] = future.result()
            report(i, results[i])
    finally:        # every result is in (or the sweep is interrupted): do not wait for the workers' exit
        pool.shutdown(wait=False, cancel_futures=True)
    return results


# ---- SLURM through submitit ----------------------------------------------------------------
@dataclass
class CellJob:
    """One cell as a submitit job: ``python main.py`` in a child process. Checkpointable: on preemption or
    time-out it stops the child with SIGTERM (the run saves its state; ``--resume`` continues it) and requeues
    itself; the requeued job finds the cell's run directory and resumes it."""
    argv: list[str]
    results_path: str
    stop_timeout_s: float = 120.0
    #: processes per cell: above 1 the run is started under torchrun (DDP inside the run, one per GPU of the job)
    nproc: int = 1
    _proc: Any = field(default=None, repr=False, compare=False)

    def __call__(self) -> dict:
        result = run_cell(self.argv, self.results_path, self._execute)
        return result.__dict__

    def command(self, main_argv: list[str]) -> list[str]:
        """``python main.py ARGS``, or under torchrun with ``nproc`` processes on the job's node."""
        if self.nproc > 1:
            return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                    str(self.nproc), str(REPO / "main.py"), *main_argv]
        return [sys.executable, str(REPO / "main.py"), *main_argv]

    def _execute(self, main_argv: list[str], log: Path) -> int:
        with open(log, "a") as fh:
            launcher = f"torchrun --standalone --nproc_per_node {self.nproc}" if self.nproc > 1 else "python"
            fh.write(f"$ {launcher} main.py {' '.join(main_argv)}\n")
            fh.flush()
            self._proc = subprocess.Popen(self.command(main_argv), cwd=str(REPO),
                                          stdout=fh, stderr=subprocess.STDOUT, preexec_fn=_ignore_preemption_signal)
            try:
                # poll, not wait(): wait() holds the Popen's lock while it blocks, and the preemption handler
                # (checkpoint, run in this thread) must be able to wait for the child itself
                while self._proc.poll() is None:
                    time.sleep(0.5)
                return self._proc.returncode
            finally:
                self._proc = None

    def stop(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def checkpoint(self, *args, **kwargs):
        import submitit
        self.stop()
        return submitit.helpers.DelayedSubmission(CellJob(list(self.argv), self.results_path, self.stop_timeout_s,
                                                          self.nproc))

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_proc"] = None
        return state


def _ignore_preemption_signal() -> None:
    """In the run's process: SLURM's warning signal (USR2, whose default action kills) is for the job, which then
    stops the run with SIGTERM; ignored dispositions survive exec."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def submitit_executor(results_path: str, cluster: str, partition: str | None, gpus_per_job: int,
                      time_min: int, array_parallelism: int, cpus_per_job: int, mem_gb: int | None):
    try:
        import submitit
    except ImportError:
        raise UserError("--launcher slurm: the submitit package is not installed (pip install submitit; it is in "
                        "requirements-dev.txt)") from None
    folder = Path(results_path) / ".submitit" / "%j"
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    params: dict[str, Any] = {"name": "tusk-sweep", "timeout_min": time_min, "nodes": 1, "tasks_per_node": 1,
                              "gpus_per_node": gpus_per_job, "cpus_per_task": cpus_per_job,
                              "slurm_array_parallelism": array_parallelism}
    if partition:
        params["slurm_partition"] = partition
    if mem_gb:
        params["mem_gb"] = mem_gb
    executor.update_parameters(**params)
    return executor


def submit_slurm(argvs: Sequence[list[str]], results_path: str, executor, report: Callable[[int, CellResult], None],
                 nproc: int = 1):
    """Submit the cells that are not done as one job array; returns ``[(cell index, job)]``."""
    index = index_runs(results_path)
    pending = []
    for i, argv in enumerate(argvs):
        state = cell_state(argv, index)
        if state.action == "skip":
            report(i, CellResult(list(argv), "skip", state.status, str(state.run_dir)))
        else:
            pending.append(i)
    if not pending:
        return []
    # the job imports utils.sweep: make the repository importable wherever it starts (sbatch exports the environment)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    jobs = []
    with executor.batch():
        for i in pending:
            jobs.append((i, executor.submit(CellJob(list(argvs[i]), str(results_path), nproc=nproc))))
    return jobs


def wait_jobs(jobs, argvs: Sequence[list[str]], report: Callable[[int, CellResult], None]) -> list[CellResult]:
    out = []
    for i, job in jobs:
        try:
            result = CellResult(**job.result())
        except Exception as exc:                # noqa: BLE001 - a failed job is that cell's result
            result = CellResult(list(argvs[i]), "fresh", f"job {job.job_id} failed: {str(exc).splitlines()[0]}",
                                None, 1)
        report(i, result)
        out.append(result)
    return out


def results_summary(results: Sequence[CellResult | None]) -> tuple[int, int]:
    """(cells done, cells not done) after a sweep."""
    done = sum(1 for r in results if r is not None and r.status in FINISHED)
    return done, len(results) - done

