"""finetune (ZSCL's Continual-FT) and its base FinetuneClipModel, on micro-clip: each --train_mode trains exactly
its parameters (the optimizer sees exactly those, frozen ones stay bit-identical, logit_scale never moves) and scores
as zero-shot CLIP before training; the feature cache serves the frozen-image modes only; the evaluation classifier is
kept until a step changes the weights; the schedule is ZSCL's cosine_lr, in the loop too; the training classes are the
current task's on task-IL sequences and the seen ones on class-IL benchmarks; fine-tuning beats zero-shot on the task
it trains; whole runs complete (seq-synth with an identical resume, the MTIL fakes, synth-mtil); the mtil best config
is ZSCL's script."""
import json
import math

import pytest
import torch

from conftest import load_results, make_method, only_run_dir, run_main, train_steps
from datasets.utils.views import EncodedView, PreprocessedView
from models.finetune import Finetune
from models.utils.finetune_clip import TRAIN_MODES
from utils.atomic import load_torch
from utils.config import parse_config
from utils.errors import UserError
from utils.experiment import run_experiment
from utils.results import RunRecorder
from utils.schedulers import zscl_cosine
from utils.training import TaskLoop

SMALL = ["--dataset", "seq-synth", "--seed", "0", "--synth_train_per_class", "8", "--synth_test_per_class", "4",
         "--quiet", "1"]
#: parameters each mode trains on micro-clip: image tower 836,864, text tower 6,937,728 (6,324,224 of them the
#: token embedding), head 128 x 100 + 100 = 12,900; logit_scale never.
TRAINED_COUNT = {"whole": 7_774_592, "image": 836_864, "text": 6_937_728, "image-fc": 849_764,
                 "image-fc-fixed": 836_864, "fc": 12_900}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("feature-cache")


def make(cache_dir, *argv, model="finetune", data=SMALL):
    """(the model's view of the dataset, the model), as ``utils.experiment.build`` makes them, on one dataset
    object per ``data`` for the whole session (seq-synth renders its images once)."""
    return make_method(model, data, "--feature_cache", str(cache_dir), *argv)


def should_train(name: str, mode: str) -> bool:
    """What ZSCL's modes train, restated by parameter name (the model's names: ``net.model.<open_clip name>``)."""
    if name.startswith("head."):
        return mode in ("image-fc", "fc")
    clip_name = name.removeprefix("net.model.")
    if clip_name == "logit_scale":
        return False
    if clip_name.startswith("visual."):
        return mode in ("whole", "image", "image-fc", "image-fc-fixed")
    return mode in ("whole", "text")


@pytest.fixture(scope="module")
def zero_shot_logits(cache_dir):
    dataset, model = make(cache_dir, model="zeroshot-clip")
    model.eval()
    with torch.no_grad():
        return model(next(dataset.task_data(list(range(10)), "test").batches(1000))["inputs"])


@pytest.mark.parametrize("mode", list(TRAIN_MODES))
def test_each_mode_starts_as_zero_shot_and_trains_exactly_its_parameters(cache_dir, zero_shot_logits, mode):
    dataset, model = make(cache_dir, "--train_mode", mode, "--lr", "1e-3", "--warmup_iters", "1")
    # the feature cache serves exactly the modes whose image tower is frozen; the others get CLIP-preprocessed
    # images with the dataset's training augmentation
    frozen_image = mode in ("text", "fc")
    assert isinstance(dataset, EncodedView) == frozen_image
    if not frozen_image:
        assert isinstance(dataset, PreprocessedView) and dataset.train_augmentation() is not None
    test = next(dataset.task_data(list(range(10)), "test").batches(1000))["inputs"]
    assert test.ndim == (2 if frozen_image else 4)

    model.eval()
    with torch.no_grad():       # step 0: the head (fc modes) and the text classifier equal zero-shot CLIP
        assert torch.allclose(model(test), zero_shot_logits, atol=1e-3)

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    expected = {n for n in before if should_train(n, mode)}
    assert set(model.trained_parameters()) == expected
    assert sum(before[n].numel() for n in expected) == TRAINED_COUNT[mode]
    train_steps(model, dataset, 0, steps=2, batch_size=8, augment=True)
    optimised = {id(p) for group in model.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in model.trained_parameters().values()}
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == expected                  # trained tensors moved, frozen ones are bit-identical
    assert "net.model.logit_scale" not in changed and not model.clip.model.training   # CLIP stays in eval mode

    with torch.no_grad():       # the scores moved; the text classifier is the current text tower's
        after = model(test)
    assert not torch.allclose(after, zero_shot_logits, atol=1e-3)
    if not TRAIN_MODES[mode].head:
        assert torch.equal(model.eval_classifier(), model.zero_shot_weights())


def test_the_logit_scale_is_the_weights_own_unless_fixed(cache_dir, zero_shot_logits):
    """As the released codes (CoOp, CLAP4CLIP, ZSCL, mammoth), logits are logit_scale.exp() x cos: micro-clip's own
    27.1, not OpenAI's 100; ``--logit_scale`` fixes it, for every method and the head of the fc modes alike."""
    own = make_method("zeroshot-clip", SMALL, "--feature_cache", str(cache_dir))[1]
    weights_own = own.clip.model.logit_scale.exp().item()
    assert own.logit_scale == pytest.approx(weights_own) and 20 < weights_own < 40
    dataset, fixed = make(cache_dir, "--train_mode", "fc", "--logit_scale", "100")
    fixed.eval()
    test = next(dataset.task_data(list(range(10)), "test").batches(1000))["inputs"]
    with torch.no_grad():
        assert fixed.logit_scale == 100.0
        assert torch.allclose(fixed(test), zero_shot_logits * (100.0 / weights_own), atol=1e-3)
        assert torch.allclose(fixed.head.weight.norm(dim=1), torch.full((fixed.head.out_features,), 100.0))
    for bad in ("nan", "0", "-5"):
        with pytest.raises(UserError, match="--logit_scale"):
            parse_config(["--model", "finetune", *SMALL, "--logit_scale", bad])


def test_the_eval_classifier_is_kept_until_a_step_changes_the_weights(cache_dir, monkeypatch):
    dataset, model = make(cache_dir, "--train_mode", "text", "--lr", "1e-3", "--warmup_iters", "1")
    encoded = []
    original = Finetune.encode_prompts
    monkeypatch.setattr(Finetune, "encode_prompts", lambda self, texts: encoded.append(len(texts))
                        or original(self, texts))
    batches = list(dataset.task_data(0, "test").batches(10))
    model.eval()
    with torch.no_grad():
        first = [model(b["inputs"]) for b in batches]
    assert len(batches) == 4 and encoded == [100 * len(dataset.TEMPLATES)]   # once for the 4 batches
    train_steps(model, dataset, 0, steps=1, batch_size=8)
    model.eval()
    with torch.no_grad():
        second = [model(b["inputs"]) for b in batches]
    assert len(encoded) == 2 and not torch.equal(first[0], second[0])
    model.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(model(batches[0]["inputs"]), second[0]) and len(encoded) == 3


def test_training_classes_task_il_current_task_class_il_seen(cache_dir, small_mtil_root):
    dataset, model = make(cache_dir, "--train_mode", "whole", "--batch_size", "4")
    for task in range(2):
        train_steps(model, dataset, task, steps=1, batch_size=4)
        logits, lo = model.train_logits(next(dataset.task_data(task, "train").batches(4))["inputs"])
        assert (lo, logits.shape[1]) == (0, 10 * (task + 1))       # class-IL: every class seen so far
        model.meta_end_task(dataset)

    mtil, model = make(cache_dir, "--train_mode", "whole", "--batch_size", "2", data=mtil_args(small_mtil_root))
    assert mtil.SETTING == "task-il"
    for task in range(2):
        train_steps(model, mtil, task, steps=1, batch_size=2)
        lo, hi = mtil.get_offsets(task)
        logits, first = model.train_logits(next(mtil.task_data(task, "train").batches(2))["inputs"])
        assert (first, logits.shape[1]) == (lo, hi - lo)           # task-IL: the current task's classes only
        # trained with the task's FIRST template; evaluated over all classes with all of each task's templates
        assert model.train_prompts(lo, lo + 1) == [mtil.task_templates(task)[0].format(mtil.class_names[lo])]
        model.meta_end_task(mtil)


def scheduled_lrs(model, steps):
    """The lr of each of ``steps`` iterations of the model's schedule, stepped as the loop does."""
    lrs = []
    for _ in range(steps):
        lrs.append(model.optimizer.param_groups[0]["lr"])
        model.scheduler.step()
    return lrs


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step()` before")
def test_schedule_is_zscls_cosine_lr(cache_dir, tmp_path, monkeypatch):
    dataset, model = make(cache_dir, "--train_mode", "fc", "--lr", "0.1", "--warmup_iters", "4", "--n_iters", "10",
                          "--optim_wd", "0.01")
    model.meta_begin_task(dataset, steps_per_epoch=3, n_epochs=4)       # the loop's 4 epochs of 3 for 10 steps
    first = model.optimizer
    assert isinstance(first, torch.optim.AdamW) and model.scheduler_mode == "iter"
    assert first.defaults["betas"] == (0.9, 0.999) and first.defaults["weight_decay"] == 0.01
    lrs = scheduled_lrs(model, 11)
    assert lrs[:4] == pytest.approx([0.1 * (s + 1) / 4 for s in range(4)])            # warm-up lr (s + 1) / w
    assert lrs[4:] == pytest.approx([0.05 * (1 + math.cos(math.pi * (s - 4) / 6)) for s in range(4, 11)])
    assert lrs[4] == pytest.approx(0.1) and lrs[9] > 0 and lrs[10] == pytest.approx(0.0, abs=1e-12)
    model.meta_begin_task(dataset, 3, 4)                    # every task: a new optimizer and schedule
    assert model.optimizer is not first and model.optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    # without --n_iters it spans the task's epochs x batches; no warm-up starts at the full lr
    dataset, model = make(cache_dir, "--train_mode", "fc", "--lr", "0.1", "--warmup_iters", "0")
    model.meta_begin_task(dataset, steps_per_epoch=3, n_epochs=2)
    lrs = scheduled_lrs(model, 7)
    assert lrs == pytest.approx([0.05 * (1 + math.cos(math.pi * s / 6)) for s in range(7)]) and lrs[-1] < 1e-12
    # a warm-up longer than the run: the run ends inside it, as ZSCL's would
    assert zscl_cosine(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 3, 5).get_last_lr() == [0.2]

    # in the loop, step s trains at lr(s), every task
    seen = []
    original = Finetune.observe

    def observe(self, inputs, labels, not_aug_inputs, epoch=None):
        seen.append(self.optimizer.param_groups[0]["lr"])
        return original(self, inputs, labels, not_aug_inputs, epoch)

    monkeypatch.setattr(Finetune, "observe", observe)
    config, _ = parse_config(["--model", "finetune", *SMALL, "--feature_cache", str(cache_dir), "--train_mode", "fc",
                              "--lr", "0.1", "--warmup_iters", "2", "--n_iters", "5", "--stop_after", "2",
                              "--checkpoint", "0", "--results_path", str(tmp_path)])
    run_experiment(config)
    expected = [0.05, 0.1] + [0.05 * (1 + math.cos(math.pi * (s - 2) / 3)) for s in range(2, 5)]
    assert seen == pytest.approx(expected * 2)


def first_task_accuracy(cache_dir, tmp_path, model, *argv):
    """Class-IL accuracy on the first task's test images after the task loop trained ``model`` on it (20 training /
    50 test images per class)."""
    data = ["--dataset", "seq-synth", "--synth_train_per_class", "20", "--synth_test_per_class", "50", "--quiet", "1"]
    view, method = make(cache_dir, *argv, "--stop_after", "1", model=model, data=data)
    tmp_path.mkdir()
    loop = TaskLoop(method, view, RunRecorder(tmp_path, view.N_TASKS, {}), checkpoint=False)
    loop.run()
    return loop.recorder.class_il[0][0]


@pytest.mark.parametrize("mode, steps, lr, margin", [("fc", 60, "1.0", 3.5), ("image", 40, "1e-4", 3.5)])
def test_fine_tuning_beats_zero_shot_on_the_task_it_trains(cache_dir, tmp_path, mode, steps, lr, margin):
    """Measured with seeds 0-2 (the data order): see the README's finetune section; the margin is about half the
    smallest gain measured."""
    zero_shot = first_task_accuracy(cache_dir, tmp_path / "zs", "zeroshot-clip")
    trained = first_task_accuracy(cache_dir, tmp_path / mode, "finetune", "--train_mode", mode, "--lr", lr,
                                  "--warmup_iters", "5", "--batch_size", "32", "--n_iters", str(steps))
    assert trained > zero_shot + margin, (zero_shot, trained)


# ---- whole runs -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_end_to_end_and_resume_after_stop_after_is_identical(tmp_path):
    argv = ["--model", "finetune", *SMALL, "--n_iters", "3", "--lr", "1e-4", "--warmup_iters", "2",
            "--batch_size", "16", "--feature_cache", "off"]
    full = run_main([*argv, "--stop_after", "2", "--results_path", str(tmp_path / "full")], tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    reference = load_results(only_run_dir(tmp_path / "full"))
    assert reference["tasks_completed"] == 2 and reference["stats"]["images_encoded"] > 0
    assert reference["stats"]["feature_cache"] is None

    part = run_main([*argv, "--stop_after", "1", "--results_path", str(tmp_path / "part")], tmp_path)
    assert part.returncode == 0, part.stderr[-3000:]
    run = only_run_dir(tmp_path / "part")
    checkpoint = load_torch(run / "checkpoint.pt", map_location="cpu")["model"]["model"]
    pretrained = Finetune.create_backbone("micro-clip", None, parse_config(argv)[0].net).state_dict()
    key = "visual.transformer.resblocks.0.attn.in_proj_weight"
    assert not torch.equal(checkpoint[f"net.model.{key}"], pretrained[f"model.{key}"])   # trained CLIP is saved
    config = json.loads((run / "config.json").read_text())
    config["run"]["stop_after"] = 2                      # continue the stopped run for one more task
    (run / "config.json").write_text(json.dumps(config))
    resumed = run_main(["--resume", str(run), "--quiet", "1"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = load_results(run)
    assert after["tasks_completed"] == 2
    assert after["accuracy_matrix"] == reference["accuracy_matrix"] and after["metrics"] == reference["metrics"]


@pytest.fixture(scope="module")
def small_mtil_root(tmp_path_factory):
    from test_datasets_mtil import write_mtil_fakes
    return write_mtil_fakes(tmp_path_factory.mktemp("mtil"), full=False)


def mtil_args(root):
    return ["--dataset", "mtil", "--data_path", str(root), "--verify_data", "0", "--download", "0",
            "--num_workers", "0", "--quiet", "1"]


@pytest.mark.slow
def test_mtil_fakes_run_completes(small_mtil_root, cache_dir, tmp_path):
    out = run_main(["--model", "finetune", *mtil_args(small_mtil_root), "--train_mode", "fc", "--n_iters", "1",
                    "--batch_size", "4", "--eval_future", "1", "--feature_cache", str(cache_dir)], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    results = load_results(only_run_dir(tmp_path / "results"))
    assert results["tasks_completed"] == 11 and results["status"] == "completed"
    assert set(results["metrics"]["task_il"]["mtil"]) >= {"transfer", "avg", "last"}


def test_synth_mtil_run_completes(cache_dir, tmp_path):
    """synth-mtil (task-IL, per-dataset templates) through the loop with the text tower training."""
    config, _ = parse_config(["--model", "finetune", "--dataset", "synth-mtil", "--synth_train_per_class", "4",
                              "--synth_test_per_class", "2", "--n_iters", "1", "--batch_size", "8", "--warmup_iters",
                              "1", "--lr", "1e-4", "--eval_future", "1", "--quiet", "1", "--checkpoint", "0",
                              "--feature_cache", str(cache_dir), "--results_path", str(tmp_path)])
    results = json.loads((run_experiment(config) / "results.json").read_text())
    assert results["tasks_completed"] == 7 and results["setting"] == "task-il"
    assert set(results["metrics"]["task_il"]["mtil"]) >= {"transfer", "avg", "last"}
    assert results["task_names"] == ["counting", "icons", "scenes", "shades", "shapes", "styles", "textures"]


def test_best_config_on_mtil_is_zscls_finetune_script():
    config, _ = parse_config(["--model", "finetune", "--dataset", "mtil", "--model_config", "best"])
    assert config.backbone == "ViT-B/16" and config.sources["ls"] == "finetune.yaml:mtil"
    assert (config.method.train_mode, config.method.ls, config.method.warmup_iters) == ("whole", 0.2, 100)
    run = config.run
    assert (run.n_iters, run.lr, run.batch_size, run.optimizer, run.optim_wd, run.eval_future) == \
        (1000, 1e-5, 64, "adamw", 0.0, True)
    assert config.method.task_lr == ["aircraft=5e-5", "mnist=5e-5"]      # the lr array of every 11-dataset script
    # without a config: ZSCL's args.py (AdamW, lr 1e-5, batch 64, warm-up 100, no label smoothing) on micro-clip
    config, _ = parse_config(["--model", "finetune", "--dataset", "seq-synth"])
    assert (config.backbone, config.run.optimizer, config.run.lr, config.run.batch_size) == \
        ("micro-clip", "adamw", 1e-5, 64)
    assert (config.method.train_mode, config.method.ls, config.method.warmup_iters) == ("whole", 0.0, 100)
