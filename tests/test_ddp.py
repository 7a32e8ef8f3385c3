"""DDP inside a run (``utils/distributed.py``): a 2-process gloo run on the CPU, started with torchrun's environment,
against the 1-process run with the same global batch.

The arithmetic is the same up to rounding: one float64 step of small-cnn (shards of 16 and 15 items, BatchNorm
over the global batch) has the 1-process gradients to 1e-12. In float32 the sums are rounded in another order,
and small-cnn's max-pools amplify that (a near-tie picks another pixel): after 30 steps its weights differ by
~1e-3, so ER's accuracies may differ by a test image; the test allows 2 of a task's 40 (5 points) and asserts the
memories identical. CLIP-Adapter on cached features has no such amplifier: its accuracy matrix must be equal and
its weights within 1e-5. The features the two ranks encoded into the feature cache must be the 1-process ones.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, load_results, only_run_dir, run_main

TINY = ["--dataset", "seq-synth", "--synth_train_per_class", "12", "--synth_test_per_class", "4", "--batch_size",
        "16", "--n_epochs", "1", "--seed", "0", "--quiet", "1"]
ER = ["--model", "er", "--buffer_size", "50", *TINY]
CLIP_ADAPTER = ["--model", "clip-adapter", "--buffer_size", "100", "--finetune_epochs", "1", *TINY]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The 2-process runs, in two processes started with torchrun's environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``; without torchrun's agent, whose own start costs 2 s here),
    each running them in turn; the 1-process runs in this process meanwhile."""
    d = tmp_path_factory.mktemp("ddp")
    ddp = [
        ["@gradients", str(d / "gradients.json")],
        [*ER, "--stop_after", "1", "--results_path", str(d / "er2")],
        ["--resume", f"@run:{d / 'er2'}", "--stop_after", "2", "--quiet", "1"],
        [*CLIP_ADAPTER, "--stop_after", "3", "--feature_cache", str(d / "cache2"), "--results_path", str(d / "ca2")],
        [*CLIP_ADAPTER, "--stop_after", "1", "--feature_cache", str(d / "cache2"), "--results_path",
         str(d / "ca2_stopped")],
    ]
    port = str(_free_port())
    ranks = []
    for rank in range(2):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "RANK": str(rank),
               "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": port}
        ranks.append(subprocess.Popen([sys.executable, str(REPO / "tests" / "ddp_worker.py"), json.dumps(ddp)],
                                      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        for args, name in ((ER + ["--stop_after", "2"], "er1"),
                           (CLIP_ADAPTER + ["--stop_after", "3", "--feature_cache", str(d / "cache1")], "ca1")):
            out = run_main([*args, "--results_path", str(d / name)], d)
            assert out.returncode == 0, out.stderr
        outputs = [proc.communicate(timeout=240) for proc in ranks]
    finally:
        for proc in ranks:
            if proc.poll() is None:
                proc.kill()
    for proc, (stdout, stderr) in zip(ranks, outputs):
        assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    return d, outputs[0][0] + outputs[1][0]


def _run(d: Path, name: str) -> Path:
    return only_run_dir(d / name)


def _matrices(run_dir: Path) -> dict:
    return load_results(run_dir)["accuracy_matrix"]


def _checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True, map_location="cpu")


def _max_weight_difference(a: dict, b: dict) -> float:
    ma, mb = a["model"]["model"], b["model"]["model"]
    assert ma.keys() == mb.keys()
    return max(float((ma[k].double() - mb[k].double()).abs().max()) for k in ma if ma[k].is_floating_point())


def _assert_close(a: dict, b: dict, points: float) -> None:
    for which in ("class_il", "task_il"):
        for row_a, row_b in zip(a[which], b[which], strict=True):
            assert [x is None for x in row_a] == [x is None for x in row_b]
            assert all(abs(x - y) <= points for x, y in zip(row_a, row_b) if x is not None), (which, row_a, row_b)


def test_one_step_has_the_one_process_gradients(runs):
    d, _ = runs
    assert json.loads((d / "gradients.json").read_text())["relative_difference"] < 1e-12


def test_er_two_processes_match_one(runs):
    """Stopped after a task and resumed under DDP, against the uninterrupted 1-process run."""
    d, _ = runs
    one, two = _run(d, "er1"), _run(d, "er2")
    events = [json.loads(line)["event"] for line in (two / "log.jsonl").read_text().splitlines()]
    assert events.count("resume") == 1 and events[-1] == "end"
    _assert_close(_matrices(two), _matrices(one), 5.0)
    assert load_results(one)["accuracy_matrix"]["class_il"][1][0] > 10     # it learnt something to compare (chance 5)
    a, b = _checkpoint(one), _checkpoint(two)
    assert _max_weight_difference(a, b) < 2e-2
    mem_a, mem_b = a["model"]["buffer"], b["model"]["buffer"]           # the reservoir saw the same stream
    assert mem_a["num_seen"] == mem_b["num_seen"] == 240
    for column in mem_a["columns"]:
        assert torch.equal(mem_a["columns"][column], mem_b["columns"][column]), column
    assert torch.equal(a["data_generator"], b["data_generator"])             # the same global order


def test_clip_adapter_two_processes_match_one(runs):
    d, _ = runs
    one, two = _run(d, "ca1"), _run(d, "ca2")
    assert _matrices(two) == _matrices(one)
    a, b = _checkpoint(one), _checkpoint(two)
    assert _max_weight_difference(a, b) < 1e-5
    assert torch.equal(a["model"]["buffer"]["columns"]["indexes"], b["model"]["buffer"]["columns"]["indexes"])
    # the two ranks encoded half the batches each: the cached features are the 1-process ones
    files = sorted(p.relative_to(d / "cache1") for p in (d / "cache1").rglob("*.pt"))
    assert files and files == sorted(p.relative_to(d / "cache2") for p in (d / "cache2").rglob("*.pt"))
    for rel in files:
        fa = torch.load(d / "cache1" / rel, weights_only=True)["features"]
        fb = torch.load(d / "cache2" / rel, weights_only=True)["features"]
        assert torch.equal(fa, fb), rel


def test_rank_zero_alone_writes_the_run_directory(runs):
    d, stdout = runs
    for name in ("er2", "ca2", "ca2_stopped"):
        run_dir = _run(d, name)                              # exactly one run directory per run
        assert (run_dir / "results.json").is_file() and (run_dir / "checkpoint.pt").is_file()
        assert not list(run_dir.glob(".*.tmp"))
    assert stdout.count("results: ") == 4                   # one summary per run: rank 0's


def test_ddp_checkpoint_resumes_in_one_process(runs, tmp_path):
    d, _ = runs
    stopped = tmp_path / "ca2_stopped"
    shutil.copytree(d / "ca2_stopped", stopped)
    out = run_main(["--resume", str(only_run_dir(stopped)), "--stop_after", "3", "--quiet", "1"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert _matrices(only_run_dir(stopped)) == _matrices(_run(d, "ca1"))
