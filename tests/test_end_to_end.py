"""Whole runs of ``main.py`` on seq-synth: results, outputs, resume after SIGKILL, SIGINT, baselines."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, load_results, only_run_dir, run_main

# The README's classic baselines on a smaller seq-synth (80 training, 20 test images per class; 5 epochs)
ER = ["--model", "er", "--dataset", "seq-synth", "--buffer_size", "500", "--seed", "0",
      "--synth_train_per_class", "80", "--synth_test_per_class", "20"]
SGD = ["--model", "sgd", "--dataset", "seq-synth", "--seed", "0", "--synth_train_per_class", "80",
       "--synth_test_per_class", "20"]
# a smaller world for the tests that compare many methods
SMALL = ["--dataset", "seq-synth", "--seed", "1", "--synth_train_per_class", "80",
         "--synth_test_per_class", "20", "--n_epochs", "2", "--quiet", "1"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def main_runs(tmp_path_factory):
    """The README's ER command and its SGD counterpart, run once for the module."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, cmd in (("er", ER), ("sgd", SGD)):
        proc = run_main(cmd + ["--quiet", "1"], root / name)
        assert proc.returncode == 0, proc.stderr
        out[name] = only_run_dir(root / name / "results")
    return out


def test_er_beats_sgd(main_runs):
    er, sgd = load_results(main_runs["er"]), load_results(main_runs["sgd"])
    er_last, sgd_last = er["metrics"]["last_accuracy"], sgd["metrics"]["last_accuracy"]
    assert er_last > sgd_last + 10, (er_last, sgd_last)
    assert er["metrics"]["forgetting"] < sgd["metrics"]["forgetting"]
    # a trained task is learnt well above chance (10%) before it is forgotten
    assert np.mean([sgd["accuracy_matrix"]["class_il"][t][t] for t in range(10)]) > 40


def test_run_outputs(main_runs):
    run = main_runs["er"]
    res = load_results(run)
    assert res["status"] == "completed" and res["tasks_completed"] == 10
    for which in ("class_il", "task_il"):
        m = res["accuracy_matrix"][which]
        assert len(m) == 10 and all(len(r) == 10 for r in m)
        assert all(m[t][k] is None for t in range(10) for k in range(t + 1, 10))      # future: not evaluated
        assert all(0 <= m[t][k] <= 100 for t in range(10) for k in range(t + 1))
    for key in ("avg_accuracy", "last_accuracy", "bwt", "forgetting"):
        assert isinstance(res["metrics"][key], float)
    assert res["metrics"]["averaging"] == "mean of per-task accuracies"
    assert len(res["seconds_per_task"]) == 10 and res["seed"] == 0
    assert sorted(res["class_order"]) == list(range(100))
    assert res["environment"]["packages"]["torch"]
    assert "git_commit" in res["environment"] and res["environment"]["torch_threads"] >= 1
    assert res["environment"]["cpu_capability"] and "cpu" in res["environment"]   # kernels can move the last bits
    # task-IL is never below class-IL: it picks among fewer classes
    assert np.all(np.array(res["accuracy_matrix"]["task_il"][-1]) >= np.array(res["accuracy_matrix"]["class_il"][-1]))

    config = json.loads((run / "config.json").read_text())
    assert config["selection"] == {"model": "er", "dataset": "seq-synth", "backbone": "small-cnn", "model_config": "none"}
    assert config["run"]["buffer_size"] == 500 and config["sources"]["buffer_size"] == "cli"
    assert config["sources"]["lr"] == "dataset defaults" and config["sources"]["optimizer"] == "default"

    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    # seq-synth's default: 5 epochs per task
    assert [e["event"] for e in events] == ["start"] + (["epoch"] * 5 + ["task_end"]) * 10 + ["end"]
    assert all(e["seconds"] > 0 for e in events if e["event"] == "epoch")
    assert (run / "checkpoint.pt").is_file()


def test_resume_after_sigkill_gives_identical_results(tmp_path):
    """ER (its memory must come back too), 4 of the 10 tasks at 2 epochs each, killed after its second task."""
    short = [*ER, "--n_epochs", "2", "--stop_after", "4", "--quiet", "1"]
    reference = run_main(short, tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr
    results = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, str(REPO / "main.py"), *short,
                             "--results_path", str(results)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            logs = list(results.glob("*/*/*/log.jsonl"))
            if logs and logs[0].read_text().count('"task_end"') >= 2:
                break
            if proc.poll() is not None:
                pytest.fail("the run ended before it could be killed")
            time.sleep(0.05)
        else:
            pytest.fail("the run did not finish two tasks in time")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    run = only_run_dir(results)
    killed = load_results(run)
    # the log names a task's end just before its results are published: the kill may come in between
    assert killed["status"] == "running" and 1 <= killed["tasks_completed"] < 4

    resumed = run_main(["--resume", str(run), "--quiet", "1"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    after, reference = load_results(run), load_results(only_run_dir(tmp_path / "reference" / "results"))
    assert after["status"] == "stopped" and after["tasks_completed"] == 4
    assert after["accuracy_matrix"] == reference["accuracy_matrix"]
    assert after["metrics"] == reference["metrics"]
    events = [json.loads(line)["event"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert "resume" in events and events[-1] == "end"


def test_sigint_saves_and_resume_finishes(tmp_path):
    results = tmp_path / "results"
    cmd = [sys.executable, str(REPO / "main.py"), "--model", "sgd", *SMALL, "--results_path", str(results)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        logs = list(results.glob("*/*/*/log.jsonl"))
        if logs and '"task_end"' in logs[0].read_text():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "--resume" in err and "Traceback" not in err
    run = only_run_dir(results)
    res = load_results(run)
    if res["tasks_completed"] < 10:       # the signal arrived during training, as intended
        assert res["status"] == "interrupted"
        assert (run / "interrupted.pt").is_file()
    resumed = run_main(["--resume", str(run)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert load_results(run)["tasks_completed"] == 10


def test_runs_never_share_a_directory(tmp_path):
    for _ in range(2):
        out = run_main(["--model", "sgd", *SMALL, "--stop_after", "1"], tmp_path)
        assert out.returncode == 0, out.stderr
    runs = sorted(p for p in (tmp_path / "results").glob("*/*/*") if p.is_dir())
    assert len(runs) == 2
    assert all(load_results(r)["status"] == "stopped" for r in runs)


def test_baselines_against_finetuning(tmp_path):
    """The first 4 of the 10 tasks, 3 epochs each (measured, seed 1, class-IL last accuracy: SGD 19.88, joint
    53.88, LwF 19.25, iCaRL 30.50; class-IL forgetting SGD 71.3, iCaRL 24.8; task-IL forgetting SGD 27.3, LwF
    5.8). LwF's known effect is in task-IL: its class-IL forgetting is within a point of SGD's (70.3), as in
    mammoth's tables, so that is not asserted. Four tasks instead of ten: joint's cost grows with the tasks
    seen (10 task-units here against 55), and every ordering below already holds at the fourth task."""
    small = [("3" if prev == "--n_epochs" else a) for prev, a in zip([None, *SMALL], SMALL)] + ["--stop_after", "4"]
    last, forget, forget_til = {}, {}, {}
    for model, extra in (("sgd", []), ("joint", []), ("lwf", []), ("icarl", ["--buffer_size", "200"])):
        out = run_main(["--model", model, *small, *extra], tmp_path / model)
        assert out.returncode == 0, out.stderr
        res = load_results(only_run_dir(tmp_path / model / "results"))
        assert res["tasks_completed"] == 4
        metrics = res["metrics"]
        last[model], forget[model] = metrics["class_il"]["last_accuracy"], metrics["class_il"]["forgetting"]
        forget_til[model] = metrics["task_il"]["forgetting"]
    assert last["joint"] > last["sgd"] + 20, last
    assert last["icarl"] > last["sgd"] + 5, last
    assert forget_til["lwf"] < forget_til["sgd"] / 2, forget_til
    assert forget["icarl"] < forget["sgd"] / 2, forget
