"""The README's worked examples of method authoring: online EWC (``ewc_on``) and GDumb (``gdumb``)."""
import collections
import signal

import pytest
import torch
import torch.nn.functional as F

from conftest import keep_checkpoint_after, train_steps
from models import get_model_class
from utils.config import parse_config
from utils.experiment import build
from utils.results import RunRecorder
from utils.seeding import seed_everything
from utils.training import TaskLoop

SMALL = ["--dataset", "seq-synth", "--synth_train_per_class", "10", "--synth_test_per_class", "4", "--quiet", "1",
         "--seed", "0"]
ADAM = ["--optimizer", "adam", "--lr", "0.001", "--n_epochs", "2", "--e_lambda", "1e6"]
_DATA = {}


def loop(model_name, run_dir, *argv, stop_after=3, resume=False, checkpoint=True, keep_after=None):
    """(model, recorder) of ``model_name`` trained on the first ``stop_after`` tasks of SMALL through the loop
    (continuing ``run_dir``'s checkpoint with ``resume``); ``keep_after=(k, DIR)`` copies the checkpoint written
    after task k into DIR."""
    dataset, model = make(model_name, *argv, "--stop_after", str(stop_after), "--results_path", str(run_dir))
    run_dir.mkdir(parents=True, exist_ok=True)
    lp = TaskLoop(model, dataset, RunRecorder(run_dir, dataset.N_TASKS, {}), checkpoint=checkpoint)
    if keep_after is not None:
        keep_checkpoint_after(lp, *keep_after)
    if resume:
        lp.restore()
    lp.run()
    return model, lp.recorder


def make(model_name, *argv):
    """(dataset, model) for ``--model model_name`` on SMALL, built as ``utils.experiment.build`` does (one dataset
    for the module)."""
    cfg, _ = parse_config(["--model", model_name, *SMALL, *argv])
    if "data" not in _DATA:
        _DATA["data"] = build(cfg)[0]
    dataset = _DATA["data"]
    seed_everything(cfg.run.seed)
    model_cls = get_model_class(model_name)
    return dataset, model_cls(model_cls.create_backbone(cfg.backbone, dataset, cfg.net), dataset, cfg.run, cfg.method,
                              "cpu")


def bwt(matrix):
    last = len(matrix) - 1
    return sum(matrix[last][k] - matrix[k][k] for k in range(last)) / last


# ---- ewc_on ----------------------------------------------------------------------------------------------
def test_the_fisher_is_mammoths_per_image_estimate_and_leaves_batchnorm_alone():
    view, model = make("ewc_on", "--batch_size", "16")
    train_steps(model, view, 0, steps=3)
    model.train()
    full = view.task_data(0, "train")
    task = type(full)(full.images[::4], full.labels[::4], full.indexes[::4], full.augment, full.normalize)  # 25 images
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    start = model.generator.get_state()
    fisher = model.task_fisher(task)
    assert all(torch.equal(before[k], v) for k, v in model.net.state_dict().items())   # running stats unchanged
    # mammoth's estimate: one image at a time in training mode, p(y|x) * (d log p(y|x))^2, / (batches * batch size)
    model.generator.set_state(start)
    params = model.named_trainable_parameters()
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    for batch in task.batches(16, shuffle=True, generator=model.generator, train=True):
        for image, label in zip(batch["inputs"], batch["labels"]):
            model.net.zero_grad()
            log_p = F.log_softmax(model.net(image.unsqueeze(0)), dim=1)[0, label]
            log_p.backward()
            for n, p in params.items():
                expected[n] += log_p.detach().exp() * p.grad ** 2
    for n in expected:
        expected[n] /= task.num_batches(16) * 16
        assert torch.allclose(fisher[n], expected[n], rtol=1e-4, atol=1e-12), n
    assert sum(float(f.sum()) for f in fisher.values()) > 0
    moved = [k for k, v in model.net.state_dict().items() if "running" in k and not torch.equal(before[k], v)]
    assert moved                                      # the reference pass above moved them, as mammoth's does


@pytest.fixture(scope="module")
def adam_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ewc")
    return {"sgd": loop("sgd", root / "sgd", *ADAM[:-2], stop_after=2, checkpoint=False)[1],
            "ewc": loop("ewc_on", root / "ewc", *ADAM, stop_after=2, keep_after=(1, root / "part")),
            "root": root}


def test_ewc_under_adam_with_a_strong_lambda_cuts_forgetting(adam_runs):
    sgd, ewc = bwt(adam_runs["sgd"].class_il), bwt(adam_runs["ewc"][1].class_il)
    assert ewc > sgd + 20, (ewc, sgd)
    model = adam_runs["ewc"][0]
    assert set(model.fisher) == set(model.named_trainable_parameters())


def test_ewc_resumes_identically(adam_runs):
    root = adam_runs["root"]
    model, recorder = loop("ewc_on", root / "part", *ADAM, stop_after=2, resume=True)
    full_model, full = adam_runs["ewc"]
    assert recorder.class_il == full.class_il
    assert all(torch.equal(model.fisher[n], full_model.fisher[n]) for n in full_model.fisher)


# ---- gdumb ---------------------------------------------------------------------------------------------
def test_gdumb_trains_only_on_its_memory(tmp_path, monkeypatch):
    from models.gdumb import Gdumb
    seen = collections.defaultdict(list)                      # fit number -> the labels of every training batch
    fits = []
    original_fit = Gdumb.fit_memory

    def fit_memory(self):
        fits.append(sorted(self.memory_items()["labels"].tolist()))
        loss = self.loss
        self.loss = lambda out, y: (seen[len(fits)].append(y.tolist()), loss(out, y))[1]
        original_fit(self)
        self.loss = loss

    monkeypatch.setattr(Gdumb, "fit_memory", fit_memory)
    model, recorder = loop("gdumb", tmp_path, "--buffer_size", "50", "--fitting_epochs", "3", "--cutmix_alpha", "0",
                           "--fit_each_task", "1", "--batch_size", "20", stop_after=2, checkpoint=False)
    assert len(fits) == 2 and len(fits[0]) == len(fits[1]) == 50    # a fit after each task, the memory full
    assert set(fits[0]) <= set(range(10)) and len(set(fits[1])) > 10     # task 1's classes, then both tasks'
    for fit, memory in enumerate(fits, start=1):
        batches = seen[fit]
        assert len(batches) == 3 * 3                          # 3 epochs of ceil(50 / 20) batches
        for e in range(3):                                    # each epoch: every memory item once, nothing else
            assert sorted(sum(batches[e * 3:(e + 1) * 3], [])) == memory
    assert not all(torch.equal(model._initial[k], v) for k, v in model.net.state_dict().items())


def test_gdumb_fits_after_the_last_task_only_by_default(tmp_path):
    model, recorder = loop("gdumb", tmp_path, "--buffer_size", "60", "--fitting_epochs", "1", stop_after=1,
                           checkpoint=False)
    assert len(model.buffer) == 60
    initial = model._initial
    assert all(torch.equal(initial[k], v) for k, v in model.net.state_dict().items())    # not trained yet


def test_a_signal_stops_gdumbs_fit_on_the_memory(tmp_path, monkeypatch):
    from models.gdumb import Gdumb
    from utils.training import Interrupted
    steps = []
    original_fit, original_step = Gdumb.fit_memory, Gdumb.step

    def fit_memory(self):
        self.stop_request["signum"] = signal.SIGTERM          # as the loop's handler records a SIGTERM
        original_fit(self)

    monkeypatch.setattr(Gdumb, "fit_memory", fit_memory)
    monkeypatch.setattr(Gdumb, "step", lambda self, *a: (steps.append(1), original_step(self, *a)))
    with pytest.raises(Interrupted):
        loop("gdumb", tmp_path, "--buffer_size", "40", "--fitting_epochs", "50", "--fit_each_task", "1",
             "--batch_size", "20", stop_after=1, checkpoint=False)
    assert len(steps) == 1                                    # stopped after the first of 100 steps
