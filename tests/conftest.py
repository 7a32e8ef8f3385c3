"""Shared fixtures: every test runs offline, on CPU, with results written under tmp_path."""
from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import shutil
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

# Two cores: keep torch from oversubscribing them. Under pytest-xdist (``-n N``, the Makefile's default) each worker
# gets its share, and the processes its tests start inherit it (OMP_NUM_THREADS): the small CNN's numbers depend on
# the thread count, and subprocess runs are compared with in-process ones.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_THREADS = max(1, min(2, os.cpu_count() or 1) // _WORKERS)
torch.set_num_threads(_THREADS)
if _WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(_THREADS)

# The network guard (tests/netguard/sitecustomize.py): installed here, and in every Python process a test starts.
NETGUARD = Path(__file__).resolve().parent / "netguard"
os.environ["PYTHONPATH"] = os.pathsep.join([str(NETGUARD), *filter(None, [os.environ.get("PYTHONPATH")])])
sys.path.insert(0, str(NETGUARD))
import sitecustomize as netguard  # noqa: E402 - the guard module (found first on the path just set)

if not hasattr(netguard, "ATTEMPTS"):         # another sitecustomize was imported before pytest: load ours by path
    import importlib.util
    _spec = importlib.util.spec_from_file_location("tusk_netguard", NETGUARD / "sitecustomize.py")
    netguard = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(netguard)


@pytest.fixture(autouse=True)
def _offline():
    """Fail the test that tried to reach a non-loopback address, even if the code under test caught the error."""
    before = len(netguard.ATTEMPTS)
    yield
    attempts = netguard.ATTEMPTS[before:]
    if attempts:
        pytest.fail(f"the test tried to use the network: {'; '.join(attempts)}", pytrace=False)


def run_main(args: list[str], tmp_path: Path, timeout: float = 300,
             subprocess_: bool | None = None) -> subprocess.CompletedProcess:
    """``python main.py ARGS``, writing results below ``tmp_path``: in this process (a fresh interpreter costs
    5-7 s of imports on 2 cores), or in a subprocess with ``subprocess_=True`` or ``TUSK_TEST_SUBPROCESS=1``."""
    args = [*args]
    if "--results_path" not in args and "--resume" not in args:
        args += ["--results_path", str(tmp_path / "results")]
    if subprocess_ is None:
        subprocess_ = os.environ.get("TUSK_TEST_SUBPROCESS", "0") == "1"
    if subprocess_:
        return subprocess.run([sys.executable, str(REPO / "main.py"), *args], cwd=REPO, capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return _run_main_in_process(args)


def _run_main_in_process(args: list[str]) -> subprocess.CompletedProcess:
    """``main.main(args)`` with what a subprocess would show: its exit code, its stdout and its stderr (warnings
    and uncaught tracebacks included), and the global RNG states, threads and cwd left as they were."""
    import main as tusk_main
    from utils.seeding import rng_state, set_rng_state
    out, err = io.StringIO(), io.StringIO()
    state, threads = rng_state(), torch.get_num_threads()

    def show(message, category, filename, lineno, file=None, line=None):
        err.write(warnings.formatwarning(message, category, filename, lineno, line))

    try:
        with contextlib.chdir(REPO), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = show
            try:
                code = tusk_main.main(args)
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            except Exception:                       # noqa: BLE001 - what the interpreter would print
                traceback.print_exc()
                code = 1
    finally:
        set_rng_state(state)
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess(["main.py", *args], code, out.getvalue(), err.getvalue())


def keep_checkpoint_after(loop, task: int, directory: Path) -> None:
    """Make ``loop`` also copy the checkpoint it writes after ``task`` tasks into ``directory`` (to resume from a
    task's end later)."""
    save = loop.save_checkpoint

    def save_and_keep(path, completed_tasks, **extra):
        save(path, completed_tasks, **extra)
        if completed_tasks == task:
            directory.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, directory / path.name)
    loop.save_checkpoint = save_and_keep


def only_run_dir(results: Path) -> Path:
    runs = [p for p in results.glob("*/*/*") if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def load_results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def train_steps(model, dataset, task: int, steps: int | None = None, batch_size: int = 16,
                seed: int | None = None, augment: bool = False) -> None:
    """Train ``model`` on ``steps`` shuffled mini-batches of task ``task`` (all of them if ``None``)
    through the model's own hooks, as the task loop would; the order is seeded (default: by the task)."""
    data = dataset.task_data(task, "train")
    n = data.num_batches(batch_size) if steps is None else steps
    model.meta_begin_task(dataset, n, 1)
    model.train()
    generator = torch.Generator().manual_seed(task if seed is None else seed)
    for batch in itertools.islice(data.batches(batch_size, shuffle=True, generator=generator, train=augment), n):
        model.meta_observe(batch, 0)


_DATASETS: dict[tuple[str, ...], object] = {}


def make_method(model: str, data: list[str], *argv: str):
    """(the model's view of the dataset, the model) on CPU, as ``utils.experiment`` builds them from ``--model
    MODEL DATA ARGV``; one dataset object per ``data`` (its flags) for the whole session, so that a synthetic
    dataset renders its images once."""
    from datasets import get_dataset_class
    from models import get_model_class
    from utils.config import parse_config
    config, _ = parse_config(["--model", model, *data, *argv])
    if tuple(data) not in _DATASETS:
        _DATASETS[tuple(data)] = get_dataset_class(config.dataset)(config.run, config.data)
    dataset, cls = _DATASETS[tuple(data)], get_model_class(model)
    backbone = cls.create_backbone(config.backbone, dataset, config.net)
    view = cls.input_view(dataset, backbone, config.run, torch.device("cpu"), config.method)
    return view, cls(backbone, view, config.run, config.method, "cpu")


@pytest.fixture
def main_runner(tmp_path):
    return lambda args, **kw: run_main(args, tmp_path, **kw)
