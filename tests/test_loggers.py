"""--logger tensorboard|wandb: what a run sends matches what it records; a missing package is a one-line error."""
from __future__ import annotations

import importlib.util
import math
import sys

import pytest

from conftest import load_results, only_run_dir, run_main

RUN = ["--model", "sgd", "--dataset", "seq-synth", "--n_epochs", "1", "--synth_train_per_class", "8",
       "--synth_test_per_class", "4", "--stop_after", "2", "--seed", "0", "--quiet", "1", "--feature_cache", "off"]
STEPS_PER_TASK = 3          # 10 classes x 8 images in batches of 32


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory):
    pytest.importorskip("tensorboard")
    tmp = tmp_path_factory.mktemp("tb")
    proc = run_main([*RUN, "--logger", "tensorboard"], tmp)
    assert proc.returncode == 0, proc.stderr
    return only_run_dir(tmp / "results")


def _scalars(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_has_every_step_loss_and_the_recorded_accuracies(tensorboard_run):
    scalars = _scalars(tensorboard_run)
    results = load_results(tensorboard_run)
    for task in (1, 2):
        losses = scalars[f"loss/task{task:02d}"]
        assert [s for s, _ in losses] == list(range(1, STEPS_PER_TASK + 1))
        assert all(math.isfinite(v) and v > 0 for _, v in losses)
    A = results["accuracy_matrix"]["class_il"]
    T = results["accuracy_matrix"]["task_il"]
    for t in range(2):
        for k in range(t + 1):
            assert scalars[f"accuracy/class_il/task{k + 1:02d}"][t - k] == (t + 1, pytest.approx(A[t][k], abs=1e-4))
            assert scalars[f"accuracy/task_il/task{k + 1:02d}"][t - k] == (t + 1, pytest.approx(T[t][k], abs=1e-4))
    assert scalars["accuracy/class_il/seen"][1][1] == pytest.approx((A[1][0] + A[1][1]) / 2, abs=1e-4)
    metrics = results["metrics"]
    assert scalars["final/last_accuracy"] == [(2, pytest.approx(metrics["last_accuracy"], abs=1e-4))]
    assert scalars["final/task_il/bwt"] == [(2, pytest.approx(metrics["task_il"]["bwt"], abs=1e-4))]
    # the logger is no setting: the leaderboard groups this run with runs without it
    from utils.reports import NOT_A_SETTING
    assert {"logger", "wandb_project", "wandb_mode"} <= NOT_A_SETTING


@pytest.mark.parametrize("name", ["tensorboard", "wandb"])
def test_missing_logger_package_is_one_line_before_the_run(name, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, name, None)       # import NAME now raises ImportError
    proc = run_main([*RUN, "--logger", name], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: --logger {name}: the {name} package is not installed (pip install {name}"
        + (" (it is in requirements-dev.txt)" if name == "tensorboard" else "") + "), or use --logger none"]
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("config.json"))


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None,
                    reason="wandb is not installed (optional); the missing-package error is tested instead")
def test_wandb_offline_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")         # what --wandb_mode offline sets (restored afterwards)
    proc = run_main([*RUN, "--logger", "wandb", "--wandb_mode", "offline"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(tmp_path / "results")
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and any(offline[0].rglob("*.wandb"))


def test_wandb_logger_sends_each_value_with_its_own_axis(tmp_path, monkeypatch):
    """The calls W&B gets (a stand-in module: the real one is optional), whatever its version."""
    import types
    calls = []

    class FakeRun:
        def define_metric(self, name, step_metric=None):
            calls.append(("define", name, step_metric))

        def log(self, values):
            calls.append(("log", values))

        def finish(self):
            calls.append(("finish",))
    fake = types.SimpleNamespace(__version__="0.31.0", init=lambda **kw: calls.append(("init", kw)) or FakeRun())
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_MODE", "online")
    from utils.loggers import make_logger
    logger = make_logger("wandb", tmp_path / "run-1", {"run": {"seed": 3}}, "proj", "offline")
    logger.step(0, 1, 2.5)
    logger.task_end(1, {0: 40.0, 1: 60.0, 2: None}, {0: 80.0, 1: 90.0, 2: None})
    logger.final({"last_accuracy": 50.0, "task_il": {"bwt": -1.5}, "averaging": "task mean"}, 2)
    logger.close()
    assert calls[0] == ("init", {"project": "proj", "name": "run-1", "dir": str(tmp_path / "run-1"),
                                 "config": {"run": {"seed": 3}}, "mode": "offline", "reinit": "create_new"})
    assert ("define", "loss/*", "task_step") in calls and ("define", "accuracy/*", "tasks_completed") in calls
    logs = [c[1] for c in calls if c[0] == "log"]
    assert logs[0] == {"loss/task01": 2.5, "task_step": 1}
    assert logs[1] == {"accuracy/class_il/task01": 40.0, "accuracy/class_il/task02": 60.0,
                       "accuracy/class_il/seen": 50.0, "accuracy/task_il/task01": 80.0,
                       "accuracy/task_il/task02": 90.0, "accuracy/task_il/seen": 85.0, "tasks_completed": 2}
    assert logs[2] == {"final/last_accuracy": 50.0, "final/task_il/bwt": -1.5, "tasks_completed": 2}
    assert calls[-1] == ("finish",)
