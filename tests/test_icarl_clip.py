"""icarl-clip (ZSCL's MTIL iCaRL) on micro-clip and a small synth-mtil: the memory never holds more than --buffer_size
(K // t per task, old sets cut to their herding prefix, where the anchor would hold K + (t - 2) K // t), herding picks
what iCaRL's greedy rule picks on the final model's normalised features, the first task is plain fine-tuning, the
distillation runs on the memory's exemplars in order against the teacher (zero-shot CLIP: non-zero once the model
moved; --teacher prev: exactly 0 at the task's start, the teacher being the previous model), refusals, and a whole
run that resumes identically."""
import json

import pytest
import torch
import torch.nn.functional as F

from conftest import only_run_dir, train_steps
from models.utils.weight_space import snapshot
from test_finetune import make
from utils.atomic import load_torch
from utils.config import parse_config
from utils.errors import UserError
from utils.experiment import run_experiment

MTIL = ["--dataset", "synth-mtil", "--seed", "0", "--synth_train_per_class", "10", "--synth_test_per_class", "5",
        "--quiet", "1"]
K = 50


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("feature-cache")


def icarl(cache_dir, *argv):
    return make(cache_dir, "--buffer_size", str(K), "--lr", "1e-3", "--warmup_iters", "1", "--batch_size", "8",
                *argv, model="icarl-clip", data=MTIL)


def task_features(model, view, task):
    """(indexes, normalised image features) of the task's training images through the model, as herding sees them."""
    batch = next(view.task_data(task, "train").batches(10_000))
    with torch.no_grad():
        feats = model.image_features(model.normalize(batch["not_aug_inputs"]))
    return batch["indexes"], F.normalize(feats.double(), dim=1)


def greedy_herding(feats, n):
    """iCaRL's rule, one pick at a time: the candidate that brings the picks' mean closest to the class mean."""
    mean, picked, total = feats.mean(0), [], torch.zeros_like(feats[0])
    for s in range(n):
        dist = ((mean - (total + feats) / (s + 1)) ** 2).sum(1)
        dist[picked] = float("inf")
        best = int(dist.argmin())
        picked.append(best)
        total = total + feats[best]
    return picked


def test_memory_is_bounded_herded_and_cut_to_prefixes(cache_dir):
    view, model = icarl(cache_dir)
    previous = None
    for t in range(3):
        train_steps(model, view, t, steps=2, batch_size=8)
        model.meta_end_task(view)
        memory = {k: v.clone() for k, v in model.buffer.get_all().items()}
        quota = K // (t + 1)
        assert set(memory) == {"indexes", "labels"}            # dataset indices, grouped by task
        assert torch.bincount(memory["labels"]).tolist() == [quota] * (t + 1)
        assert len(model.buffer) == (t + 1) * quota <= K      # the anchor: K + (t - 1) * quota at t + 1 = 3: 66
        new = memory["indexes"][memory["labels"] == t]
        indexes, feats = task_features(model, view, t)
        assert new.tolist() == indexes[greedy_herding(feats, quota)].tolist()
        if previous is not None:                              # old sets keep their first K // t, in order
            for old in range(t):
                kept = memory["indexes"][memory["labels"] == old]
                assert kept.tolist() == previous["indexes"][previous["labels"] == old][:quota].tolist()
        previous = memory


def test_first_task_is_plain_fine_tuning(cache_dir, monkeypatch):
    view, model = icarl(cache_dir)
    monkeypatch.setattr(model, "distillation", lambda *a: pytest.fail("distillation without exemplars"))
    train_steps(model, view, 0, steps=2, batch_size=8)
    assert model.buffer.is_empty()


@pytest.mark.parametrize("teacher", ["zeroshot", "prev"])
def test_distillation_runs_on_the_exemplars_against_the_teacher(cache_dir, teacher):
    view, model = icarl(cache_dir, "--teacher", teacher)
    zero_shot = snapshot(model.clip)
    train_steps(model, view, 0, steps=3, batch_size=8)
    model.meta_end_task(view)
    trained = snapshot(model.clip)
    key = "model.visual.transformer.resblocks.0.attn.in_proj_weight"
    assert not torch.equal(trained[key], zero_shot[key])
    model.meta_begin_task(view, 1, 1)
    expected = zero_shot if teacher == "zeroshot" else trained
    assert all(torch.equal(t, expected[n]) for n, t in model.teacher.net.state_dict().items())

    # the exemplars, batch after batch in memory order, starting over at the end
    memory = model.buffer.get_all()
    seen = [model.reference_batch(None, None) for _ in range(8)]
    positions = torch.cat([p for _, p in seen]).tolist()
    assert positions == (list(range(K)) + list(range(K)))[:len(positions)] and len(positions) > K
    x, pos = seen[0]
    assert torch.equal(x, view.fetch(memory["indexes"][pos]))

    loss = model.distillation(x, pos)
    if teacher == "prev":                                 # the student is its teacher at the task's start
        assert abs(loss.item()) < 1e-5
        train_steps(model, view, 1, steps=2, batch_size=8)
        loss = model.distillation(x, pos)
    assert loss.item() > 1e-4
    model.optimizer.zero_grad()
    loss.backward()
    grad = model.clip.model.visual.transformer.resblocks[0].attn.in_proj_weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0     # it trains the image tower


@pytest.mark.parametrize("argv, message", [
    (["--buffer_mode", "reservoir"], "one total --buffer_size"),
    (["--buffer_size", "0", "--buffer_per_class", "5"], "one total --buffer_size"),
    (["--exemplar_selector", "random"], "by herding"),
])
def test_other_memories_are_refused(cache_dir, argv, message):
    with pytest.raises(UserError, match=message):
        make(cache_dir, "--buffer_size", str(K), *argv, model="icarl-clip", data=MTIL)


@pytest.mark.slow
def test_whole_run_resumes_identically(tmp_path):
    def run(out, *argv):
        config, _ = parse_config(["--model", "icarl-clip", *MTIL, "--buffer_size", str(K), "--n_iters", "4",
                                  "--batch_size", "16", "--lr", "1e-4", "--warmup_iters", "2", "--feature_cache", "off",
                                  "--results_path", str(out), *argv])
        return run_experiment(config)

    full = run(tmp_path / "full", "--stop_after", "3")
    part = run(tmp_path / "part", "--stop_after", "2")
    config = json.loads((part / "config.json").read_text())
    config["run"]["stop_after"] = 3
    (part / "config.json").write_text(json.dumps(config))
    resume, resume_dir = parse_config(["--resume", str(part), "--quiet", "1"])
    run_experiment(resume, resume_dir)
    a, b = (json.loads((d / "results.json").read_text()) for d in (full, only_run_dir(tmp_path / "part")))
    assert a["accuracy_matrix"] == b["accuracy_matrix"] and b["tasks_completed"] == 3
    memories = [load_torch(d / "checkpoint.pt", map_location="cpu")["model"]["buffer"] for d in (full, part)]
    assert torch.equal(memories[0]["columns"]["indexes"], memories[1]["columns"]["indexes"])
    assert memories[0]["size"] == 3 * (K // 3)


def test_best_config_on_mtil_is_zscls_icarl():
    config, _ = parse_config(["--model", "icarl-clip", "--dataset", "mtil", "--model_config", "best"])
    run, method = config.run, config.method
    assert config.backbone == "ViT-B/16" and config.sources["buffer_size"] == "icarl-clip.yaml:mtil"
    assert (run.n_iters, run.lr, run.batch_size, run.eval_batch_size, run.optimizer, run.optim_wd, run.eval_future) \
        == (1000, 1e-5, 64, 128, "adamw", 0.0, True)
    assert (run.buffer_size, run.buffer_mode, run.buffer_storage, run.exemplar_selector) == \
        (10000, "balanced", "index", "herding")
    assert (method.train_mode, method.ls, method.warmup_iters, method.T, method.teacher) == \
        ("whole", 0.2, 100, 2.0, "zeroshot")
    assert method.image_loss and method.text_loss and method.task_lr == ["aircraft=5e-5", "mnist=5e-5"]


@pytest.mark.slow
def test_icarl_clip_forgets_less_than_finetune(tmp_path):
    """synth-mtil, 10 training / 10 test images per class, 60 steps per task at lr 1e-4, batch 16, --ls 0.2, a memory
    of 140 (20 per task at the end). Measured on seeds 0, 1, 2, task-IL (world version 3): BWT finetune -11.96 /
    -14.96 / -14.68, icarl-clip -8.68 / -7.87 / -7.71; Last 51.20 / 49.31 / 50.07 against 52.48 / 52.79 / 54.11
    (Transfer also rose, by 2.0-2.4). The margins asserted are at most half the smallest gap measured (3.28, 1.28).
    (World version 2: BWT gaps 5.73-6.86, Last gaps 1.35-2.31.)
    (On the first world design, at micro-clip's own logit scale 27.1, 20 steps hardly made finetune forget, BWT
    -0.97 on seed 0, so there was nothing to show; 20 steps were enough at the fixed scale 100 used before.)"""
    def metrics(model, *argv):
        config, _ = parse_config(["--model", model, "--dataset", "synth-mtil", "--seed", "0", "--synth_train_per_class",
                                  "10", "--synth_test_per_class", "10", "--n_iters", "60", "--batch_size", "16", "--lr",
                                  "1e-4", "--warmup_iters", "2", "--ls", "0.2", "--eval_future", "1", "--quiet", "1",
                                  "--checkpoint", "0", "--feature_cache", "off", "--results_path", str(tmp_path),
                                  *argv])
        return json.loads((run_experiment(config) / "results.json").read_text())["metrics"]["task_il"]

    finetune = metrics("finetune")
    icarl = metrics("icarl-clip", "--buffer_size", "140")
    assert icarl["bwt"] > finetune["bwt"] + 1.6, (icarl["bwt"], finetune["bwt"])
    assert icarl["mtil"]["last"] > finetune["mtil"]["last"] + 0.6, (icarl["mtil"], finetune["mtil"])
