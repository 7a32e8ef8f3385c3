"""The task loop's contract with a method, checked in-process on a tiny seq-synth."""
import json

import pytest
import torch

from models.er import Er
from models.sgd import Sgd
from utils.config import parse_config
from utils.experiment import build, run_experiment
from utils.results import RunRecorder
from utils.training import TaskLoop

TINY = ["--dataset", "seq-synth", "--synth_train_per_class", "12", "--synth_test_per_class", "4",
        "--quiet", "1", "--checkpoint", "0", "--batch_size", "16"]


def config(tmp_path, *argv):
    cfg, _ = parse_config([*argv, *TINY, "--results_path", str(tmp_path)])
    return cfg


def run(tmp_path, *argv):
    run_dir = run_experiment(config(tmp_path, *argv))
    return json.loads((run_dir / "results.json").read_text())


def test_hooks_counters_and_n_iters(tmp_path, monkeypatch):
    calls = []

    class Spy(Sgd):
        def begin_task(self, dataset):
            calls.append(("begin_task", self.current_task, self.n_past_classes, self.n_seen_classes))

        def begin_epoch(self, epoch, dataset):
            calls.append(("begin_epoch", epoch))

        def observe(self, inputs, labels, not_aug_inputs, epoch=None):
            assert int(labels.min()) >= self.n_past_classes and int(labels.max()) < self.n_seen_classes
            calls.append(("observe", self.current_task))
            return super().observe(inputs, labels, not_aug_inputs, epoch)

        def end_task(self, dataset):
            calls.append(("end_task", self.current_task))

    cfg = config(tmp_path, "--model", "sgd", "--n_iters", "11", "--stop_after", "2")
    dataset, _ = build(cfg)
    model = Spy(Sgd.create_backbone("small-cnn", dataset, cfg.net), dataset, cfg.run, cfg.method, "cpu")
    loop = TaskLoop(model, dataset, RunRecorder(tmp_path, dataset.N_TASKS, {}), checkpoint=False)
    loop.run()
    observes = [c for c in calls if c[0] == "observe"]
    assert observes == [("observe", 0)] * 11 + [("observe", 1)] * 11       # exactly --n_iters per task
    assert ("begin_task", 0, 0, 10) in calls and ("begin_task", 1, 10, 20) in calls
    assert calls.index(("end_task", 0)) < calls.index(("begin_task", 1, 10, 20))
    assert [c for c in calls if c[0] == "begin_epoch"][:2] == [("begin_epoch", 0), ("begin_epoch", 1)]  # 120/16 -> 8 steps/epoch


@pytest.mark.parametrize("mode", ["iter", "epoch"])
def test_the_loop_steps_the_scheduler(tmp_path, monkeypatch, mode):
    lrs = []
    original = Sgd.observe

    def observe(self, inputs, labels, not_aug_inputs, epoch=None):
        lrs.append(self.optimizer.param_groups[0]["lr"])
        return original(self, inputs, labels, not_aug_inputs, epoch)

    monkeypatch.setattr(Sgd, "observe", observe)
    run(tmp_path, "--model", "sgd", "--lr", "0.1", "--lr_scheduler", "cosine", "--scheduler_mode", mode,
        "--n_epochs", "3", "--stop_after", "2")
    per_task = len(lrs) // 2
    first = lrs[:per_task]
    assert first[0] == pytest.approx(0.1) and first[-1] < 0.06
    assert lrs[per_task] == pytest.approx(0.1)                    # a fresh schedule each task
    distinct = len(set(round(v, 12) for v in first))
    assert distinct == (per_task if mode == "iter" else 3)


def test_index_storage_replays_the_same_images(tmp_path):
    argv = ["--model", "er", "--buffer_size", "30", "--stop_after", "3", "--seed", "4"]
    as_tensors = run(tmp_path / "t", *argv)
    as_indices = run(tmp_path / "i", *argv, "--buffer_storage", "index")
    assert as_tensors["accuracy_matrix"] == as_indices["accuracy_matrix"]


def test_balanced_memory_with_a_selector_respects_the_quota(tmp_path, monkeypatch):
    seen = {}
    original = Er.end_task

    def end_task(self, dataset):
        labels = self.buffer.get_all()["labels"]
        seen[self.current_task] = torch.bincount(labels, minlength=self.n_seen_classes).tolist()
        return original(self, dataset)

    monkeypatch.setattr(Er, "end_task", end_task)
    run(tmp_path, "--model", "er", "--buffer_size", "40", "--buffer_mode", "balanced",
        "--exemplar_selector", "entropy", "--stop_after", "3")
    assert seen[0] == [4] * 10                    # 40 // 10 classes
    assert seen[1] == [2] * 20                    # shrunk to 40 // 20
    assert seen[2] == [1] * 30                    # 40 // 30


def test_per_class_memory(tmp_path, monkeypatch):
    sizes = []
    monkeypatch.setattr(Er, "end_task", lambda self, dataset: sizes.append(len(self.buffer)))
    run(tmp_path, "--model", "er", "--buffer_per_class", "3", "--exemplar_selector", "herding", "--stop_after", "3")
    assert sizes == [30, 60, 90]
