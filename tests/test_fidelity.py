"""Fidelity to the released code (README, "Fidelity"): every method lists its deviations, ``--list_deviations``
prints them, and the ``best`` configs of the CLAP4CLIP baselines are their released recipes."""
import math

import pytest
import torch

from main import main
from models import get_model_class, list_models
from utils.config import parse_config
from utils.deviations import HEADING, deviations, parse_deviations
from utils.schedulers import constant_warmup


@pytest.mark.parametrize("name", list_models())
def test_every_method_ends_its_docstring_with_its_deviations(name):
    items = deviations(get_model_class(name))
    assert items, f"{name}: its docstring must end with a '{HEADING}' list"
    assert all(len(item) > 10 for item in items)


def test_deviation_lists_are_parsed_with_continuation_lines():
    doc = f"""Title.

    Prose.

    {HEADING}
    - first item, which
      continues here;
    - second item.
    """
    assert parse_deviations(doc) == ["first item, which continues here;", "second item."]
    assert parse_deviations("No list here.") == []


def test_list_deviations_on_the_command_line(capsys):
    assert main(["--model", "clap4clip", "--list_deviations"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("clap4clip: deviations from the reference\n- ") and "--maple_train_all" in out
    assert main(["--model", "clip_adapter", "--list_deviations", "1"]) == 0          # with a value, any spelling
    assert "reinit_each_task" in capsys.readouterr().out
    assert main(["--model", "clap4clp", "--list_deviations"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Did you mean 'clap4clip'?" in err
    assert main(["--list_deviations"]) == 2 and "needs --model" in capsys.readouterr().err


def test_best_configs_of_the_clap4clip_baselines():
    config, _ = parse_config(["--model", "clip-adapter", "--dataset", "seq-cifar100", "--model_config", "best"])
    run, method = config.run, config.method
    assert (config.backbone, run.lr, run.optim_mom, run.lr_scheduler, run.scheduler_mode) == \
        ("ViT-B/16", 0.001, 0.0, "cosine", "iter")
    assert (run.buffer_size, run.buffer_mode, run.exemplar_selector, run.class_order, run.feature_views) == \
        (2000, "balanced", "random", "seed1993_run", 2)
    assert (method.finetune_epochs, method.reinit_each_task, method.replay) == (2, True, "append")
    config, _ = parse_config(["--model", "coop", "--dataset", "seq-cifar100", "--model_config", "best"])
    run, method = config.run, config.method
    assert (run.lr, run.optim_mom, run.optim_wd, run.batch_size, run.lr_scheduler) == (0.002, 0.9, 5e-4, 32, "cosine")
    assert (method.warmup_epochs, method.warmup_lr, method.n_ctx, method.ctx_init) == (1, 1e-5, 16, "")
    assert config.sources["warmup_epochs"] == "coop.yaml:seq-cifar100"


def test_dassl_constant_warmup_then_cosine():
    """CoOp/MaPLe (Dassl's ConstantWarmupScheduler, WARMUP_RECOUNT): epoch 0 at 1e-5, then the cosine of
    T_max = max_epoch restarted after the warm-up: epoch e at lr (1 + cos(pi (e - 1) / E)) / 2."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.002)
    sched = constant_warmup(opt, 5, 1, 1e-5)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1e-5] + [0.002 * 0.5 * (1 + math.cos(math.pi * (e - 1) / 5)) for e in range(1, 5)])
    assert lrs[1] == pytest.approx(0.002)
