"""scripts/sweep.py: a 2 x 2 grid with the local launcher, reruns that skip finished cells, the SLURM path through
submitit's local executor (and, with TUSK_TEST_PREEMPTION=1, a preempted job that requeues and resumes)."""
from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import io
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, load_results, run_main

sys.path.insert(0, str(REPO / "scripts"))
import sweep as sweep_script  # noqa: E402
from utils import sweep  # noqa: E402

BASE = {"model": "sgd", "dataset": "seq-synth", "n_epochs": 1, "synth_train_per_class": 8,
        "synth_test_per_class": 4, "stop_after": 2, "feature_cache": "off"}
GRID = {**BASE, "seed": [0, 1], "lr": [0.05, 0.1]}


def write_grid(path: Path, grid) -> Path:
    import yaml
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def sweep_main(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = sweep_script.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def runs(results: Path) -> dict[tuple, Path]:
    """{(seed, lr): run dir} below ``results``."""
    out = {}
    for config in results.glob("*/*/*/config.json"):
        run = json.loads(config.read_text())["run"]
        out[(run["seed"], run["lr"])] = config.parent
    return out


@contextlib.contextmanager
def one_thread():
    """One torch thread here and in every process started meanwhile: runs in different processes agree exactly only
    with the same thread count."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        try:
            yield
        finally:
            torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    grid = write_grid(tmp / "grid.yaml", GRID)
    with one_thread():
        code, out, err = sweep_main([grid, "--launcher", "local", "--jobs", "2", "--results_path", tmp / "results"])
    return tmp, grid, code, out, err


def test_local_launcher_runs_the_product_as_normal_runs(local_sweep):
    tmp, grid, code, out, err = local_sweep
    assert code == 0, out + err
    found = runs(tmp / "results")
    assert sorted(found) == [(0, 0.05), (0, 0.1), (1, 0.05), (1, 0.1)]
    for (seed, lr), run_dir in found.items():
        blob = json.loads((run_dir / "config.json").read_text())
        assert blob["argv"][-2:] == ["--results_path", str(tmp / "results")]
        assert blob["sources"]["lr"] == "cli" and blob["dataset"]["synth_train_per_class"] == 8
        assert load_results(run_dir)["status"] == "stopped" and load_results(run_dir)["tasks_completed"] == 2
    assert out.count("ran (stopped)") == 4 and "4 of 4 cells finished" in out
    # different cells are different runs
    assert load_results(found[(0, 0.05)])["accuracy_matrix"] != load_results(found[(1, 0.1)])["accuracy_matrix"]


def test_rerun_skips_finished_cells_and_plans_the_others(local_sweep):
    tmp, grid, *_ = local_sweep
    before = runs(tmp / "results")
    code, out, _ = sweep_main([grid, "--launcher", "local", "--jobs", "2", "--results_path", tmp / "results"])
    assert code == 0 and out.count("skipped (stopped)") == 4 and "ran" not in out
    assert runs(tmp / "results") == before
    # an interrupted cell is resumed in its own directory; one whose run holds its lock is left alone
    argv = sweep.run_argv({**BASE, "seed": 0, "lr": 0.05}, str(tmp / "results"))
    run_dir = before[(0, 0.05)]
    results = run_dir / "results.json"
    saved = results.read_text()
    try:
        results.write_text(saved.replace('"status": "stopped"', '"status": "interrupted"'))
        state = sweep.cell_state(argv, sweep.index_runs(tmp / "results"))
        assert (state.action, state.run_dir) == ("resume", run_dir)
        assert sweep.command(argv, state) == ["--resume", str(run_dir), "--quiet", "1"]
        with open(run_dir / ".lock", "a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            assert sweep.cell_state(argv, sweep.index_runs(tmp / "results")).status == "running elsewhere"
    finally:
        results.write_text(saved)
    fresh = sweep.run_argv({**BASE, "seed": 2, "lr": 0.05}, str(tmp / "results"))
    assert sweep.cell_state(fresh, sweep.index_runs(tmp / "results")).action == "fresh"


def test_bad_grids_fail_before_anything_runs(tmp_path):
    cases = [({**GRID, "buffersize": 5}, "cell 1 (--model sgd"),
             ({**GRID, "results_path": "x"}, "'results_path' cannot be in a grid"),
             ({"seed": [0, 1]}, "every grid needs 'model'"),
             ({**GRID, "lr": []}, "'lr' has an empty list of values")]
    for grid, message in cases:
        code, out, err = sweep_main([write_grid(tmp_path / "g.yaml", grid), "--results_path", tmp_path / "r"])
        assert code == 2 and message in err and err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r").exists()
    code, out, _ = sweep_main([write_grid(tmp_path / "g.yaml", [GRID, {**BASE, "model": "er", "buffer_size": 50}]),
                               "--dry_run", 1, "--results_path", tmp_path / "r"])
    assert code == 0 and len(out.splitlines()) == 5 and out.splitlines()[-1].endswith(
        "--buffer_size 50 --quiet 1 --results_path " + str(tmp_path / "r"))


needs_submitit = pytest.mark.skipif(importlib.util.find_spec("submitit") is None,
                                    reason="submitit is not installed (a test requirement)")


@needs_submitit
def test_slurm_path_through_submitits_local_executor(local_sweep, tmp_path):
    tmp, *_ = local_sweep
    grid = write_grid(tmp_path / "grid.yaml", {**BASE, "seed": 1, "lr": 0.1})
    with one_thread():
        code, out, err = sweep_main([grid, "--launcher", "slurm", "--submitit_cluster", "local", "--wait", 1,
                                     "--gpus_per_job", 0, "--cpus_per_job", 1, "--time", 10,
                                     "--results_path", tmp_path / "results"])
    assert code == 0, out + err
    assert "submitted as job" in out and "1 of 1 cells finished" in out
    (run_dir,) = runs(tmp_path / "results").values()
    # the job ran `python main.py` with the cell's command: the same run as the local launcher's cell
    assert load_results(run_dir)["accuracy_matrix"] == \
        load_results(runs(tmp / "results")[(1, 0.1)])["accuracy_matrix"]
    assert list((tmp_path / "results" / ".submitit").glob("*/*_submitted.pkl"))


@needs_submitit
@pytest.mark.skipif(os.environ.get("TUSK_TEST_PREEMPTION") != "1",
                    reason="two runs as subprocesses (~15 s); TUSK_TEST_PREEMPTION=1 runs it")
def test_preempted_job_requeues_and_resumes(local_sweep, tmp_path):
    tmp, *_ = local_sweep
    results = tmp_path / "results"
    argv = sweep.run_argv({**BASE, "seed": 1, "lr": 0.1, "synth_train_per_class": 60}, str(results))
    executor = sweep.submitit_executor(str(results), "local", None, 0, 10, 1, 1, None)
    with one_thread():
        ((_, job),) = sweep.submit_slurm([argv], str(results), executor, lambda i, r: None)

    def one_task_done():
        blob = [json.loads(p.read_text()) for p in results.glob("*/*/*/results.json")]
        return bool(blob) and blob[0].get("tasks_completed", 0) >= 1
    deadline = time.monotonic() + 120
    while not one_task_done():
        assert time.monotonic() < deadline and not job.done()
        time.sleep(0.05)
    # what SLURM does before a preemption or a time-out: USR2 to the job's process (here the child of submitit's
    # local controller), whose handler checkpoints (stops the run) and requeues
    import psutil
    (task,) = psutil.Process(job._process.pid).children()
    task.send_signal(signal.SIGUSR2)
    result = job.result()
    assert result["status"] == "stopped" and result["action"] == "resume"
    (run_dir,) = runs(results).values()
    events = [json.loads(line)["event"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert "interrupted" in events and "resume" in events
    with one_thread():
        uninterrupted = run_main(sweep.cell_argv({**BASE, "seed": 1, "lr": 0.1, "synth_train_per_class": 60}) +
                                 ["--quiet", "1"], tmp_path / "direct")
    assert uninterrupted.returncode == 0
    (direct,) = runs(tmp_path / "direct" / "results").values()
    assert load_results(run_dir)["accuracy_matrix"] == load_results(direct)["accuracy_matrix"]


def test_a_cell_with_several_gpus_runs_under_torchrun():
    """--gpus_per_job G > 1: the cell is one DDP run over the job's G GPUs, not G runs."""
    one, four = sweep.CellJob(["--model", "er"], "r"), sweep.CellJob(["--model", "er"], "r", nproc=4)
    assert one.command(["--seed", "0"])[1:] == [str(REPO / "main.py"), "--seed", "0"]
    assert four.command(["--seed", "0"])[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                                 "4", str(REPO / "main.py"), "--seed", "0"]
    requeued = four.checkpoint().function                             # preemption: the requeued job
    assert requeued.nproc == 4 and requeued.argv == ["--model", "er"]

