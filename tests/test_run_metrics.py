"""What a run records besides its accuracy matrices (results.json), checked in-process on a tiny seq-synth:
sample-weighted accuracy, top-5, ECE over the seen test set, novel-data detection, transfer metrics."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from models.sgd import Sgd
from utils import metrics
from utils.config import parse_config
from utils.evaluate import evaluate_step
from utils.experiment import build, run_experiment
from utils.results import RunRecorder
from utils.training import TaskLoop

TINY = ["--dataset", "seq-synth", "--synth_train_per_class", "12", "--synth_test_per_class", "4",
        "--quiet", "1", "--checkpoint", "0", "--batch_size", "16", "--model", "sgd"]
PER_TASK = 40       # 10 classes x 4 test images


class Sampling(Sgd):
    """Fine-tuning with fake Monte-Carlo samples (the logits plus seeded noise), for predictive variance."""

    def forward_samples(self, x):
        logits = self(x)
        noise = torch.randn((3, *logits.shape), generator=torch.Generator().manual_seed(0))
        return logits + noise


class ZeroShot(Sgd):
    CAN_PREDICT_FUTURE = True


def loop(tmp_path, model_cls, *argv, **run_overrides):
    cfg, _ = parse_config([*TINY, *argv, "--results_path", str(tmp_path)])
    dataset, _ = build(cfg)
    args = dataclasses.replace(cfg.run, **run_overrides)
    model = model_cls(Sgd.create_backbone("small-cnn", dataset, cfg.net), dataset, args, cfg.method, "cpu")
    recorder = RunRecorder(tmp_path, dataset.N_TASKS, {})
    task_loop = TaskLoop(model, dataset, recorder, checkpoint=False)
    task_loop.run()
    return task_loop, json.loads(json.dumps(recorder.results()))


def test_a_run_records_calibration_top5_and_novelty(tmp_path):
    task_loop, res = loop(tmp_path, Sampling, "--stop_after", "3", "--eval_ood", "1")
    m = res["metrics"]
    assert res["test_sizes"] == [PER_TASK] * 3 + [None] * 7
    assert m["averaging"] == metrics.TASK_MEAN and m["sample_weighted"]["averaging"] == metrics.SAMPLE_WEIGHTED
    # equal test sets: the two conventions agree
    assert m["sample_weighted"]["class_il"]["step_accuracy"] == pytest.approx(m["class_il"]["step_accuracy"])
    assert len(res["top5_matrix"]["class_il"]) == 3 and m["top5"]["class_il"]["last_accuracy"] >= m["last_accuracy"]
    steps = res["calibration"]["steps"]
    assert len(steps) == 3 and m["ece"] == steps[-1]["ece"] and len(res["calibration"]["bin_edges"]) == 17
    assert [sum(s["counts"]) for s in steps] == [PER_TASK, 2 * PER_TASK, 3 * PER_TASK]      # every seen image
    novelty = res["novelty"]["steps"]
    assert [(s["task"], s["n_in"], s["n_novel"]) for s in novelty] == [(t, PER_TASK * (t + 1), PER_TASK * (9 - t))
                                                                       for t in range(3)]
    assert set(m["novelty"]) == {"energy", "max_softmax", "variance"}
    assert m["novelty"]["energy"]["auroc"] == pytest.approx(np.mean([s["energy"]["auroc"] for s in novelty]))
    # the accuracy matrix is as without these extras: no future task was evaluated for accuracy
    assert all(v is None for row in res["accuracy_matrix"]["class_il"] for v in row[3:])

    # the evaluation's numbers agree with a direct computation on the same model and test sets
    model, dataset = task_loop.model, task_loop.dataset
    model.eval()
    n_seen = dataset.get_offsets(2)[1]
    ev = evaluate_step(model, dataset, {k: task_loop.test_data(k) for k in range(10)}, 2, [0, 1, 2], 64,
                       calibration=True, novel_tasks=range(3, 10))
    with torch.no_grad():
        logits = {k: torch.cat([model(b["inputs"]) for b in task_loop.test_data(k).batches(64)])[:, :n_seen].numpy()
                  for k in range(10)}
    labels = {k: task_loop.test_data(k).labels.numpy() for k in range(10)}
    seen = np.concatenate([logits[k] for k in range(3)])
    seen_labels = np.concatenate([labels[k] for k in range(3)])
    probs = torch.from_numpy(seen).softmax(1).numpy()
    assert ev.calibration["ece"] == pytest.approx(
        metrics.expected_calibration_error(probs.max(1), probs.argmax(1) == seen_labels))
    # --ece_per_batch 1: CLAP4CLIP's mean over the seen tasks' evaluation batches (of 64, per task)
    per_batch = evaluate_step(model, dataset, {k: task_loop.test_data(k) for k in range(3)}, 2, [0, 1, 2], 64,
                              calibration=True, ece_per_batch=True).calibration
    sizes = [len(b["labels"]) for k in range(3) for b in task_loop.test_data(k).batches(64)]
    assert per_batch["ece_mode"] == "per_batch" and per_batch["ece"] == pytest.approx(
        metrics.mean_batch_ece(probs.max(1), probs.argmax(1) == seen_labels, sizes))
    assert per_batch["counts"] == ev.calibration["counts"]           # the diagram stays dataset-level
    for k in range(3):
        assert ev.top5["class_il"][k] == pytest.approx(metrics.topk_accuracy(logits[k], labels[k], 5))
        assert ev.class_il[k] == pytest.approx(100 * np.mean(logits[k].argmax(1) == labels[k]))
    novel = np.concatenate([logits[k] for k in range(3, 10)])          # scored over the seen classes only
    assert ev.novelty["energy"]["auroc"] == pytest.approx(
        metrics.auroc(metrics.energy_score(seen), metrics.energy_score(novel)))
    for score in ("energy", "max_softmax"):           # the same step as the run recorded
        assert ev.novelty[score] == pytest.approx(novelty[-1][score])


def test_cheap_metrics_by_default_and_novelty_only_on_request(tmp_path):
    cfg, _ = parse_config([*TINY, "--stop_after", "2", "--results_path", str(tmp_path / "a")])
    res = json.loads((run_experiment(cfg) / "results.json").read_text())
    assert "calibration" in res and "ece" in res["metrics"] and "novelty" not in res
    cfg, _ = parse_config([*TINY, "--stop_after", "2", "--compute_ece", "0", "--results_path", str(tmp_path / "b")])
    res = json.loads((run_experiment(cfg) / "results.json").read_text())
    assert "calibration" not in res and "ece" not in res["metrics"]


def test_transfer_metrics_with_eval_future(tmp_path):
    _, res = loop(tmp_path, ZeroShot, "--stop_after", "3", eval_future=True)
    A = np.array(res["accuracy_matrix"]["class_il"], dtype=float)
    assert A.shape == (3, 10) and not np.isnan(A).any()
    zero_shot = res["zero_shot_accuracy"]["class_il"]
    assert len(zero_shot) == 10 and None not in zero_shot
    m = res["metrics"]["class_il"]
    assert m["mtil"] == pytest.approx(metrics.mtil_summary(A))
    assert m["future_transfer"] == pytest.approx(metrics.future_transfer(A))
    assert m["forward_transfer"] == pytest.approx(metrics.forward_transfer(A, np.array(zero_shot)))
    # sample-weighted and top-5 step accuracies still use the seen tasks only
    assert len(res["metrics"]["top5"]["class_il"]["step_accuracy"]) == 3


def test_old_checkpoints_without_the_new_fields_still_load(tmp_path):
    recorder = RunRecorder(tmp_path, 2, {})
    recorder.load_state({"class_il": [[50.0, None]], "task_il": [[60.0, None]], "task_seconds": [1.0]})
    recorder.add_row({0: 40.0, 1: 30.0}, {0: 55.0, 1: 70.0}, 1.0)
    res = recorder.results()
    assert res["metrics"]["last_accuracy"] == pytest.approx(35.0)
    assert "sample_weighted" not in res["metrics"] and "calibration" not in res
