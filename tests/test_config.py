"""Command line to configuration: precedence, validation and user-facing errors."""
import pytest

from models.sgd import Sgd
from utils import config as config_mod
from utils.config import parse_config
from utils.errors import UserError


def test_unknown_model_exits_2_with_the_list(main_runner):
    out = main_runner(["--model", "nosuch", "--dataset", "seq-synth"])
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "unknown model 'nosuch'" in out.stderr
    for name in ("er", "sgd", "lwf", "icarl", "joint"):
        assert name in out.stderr


def test_close_matches_are_suggested():
    with pytest.raises(UserError, match="Did you mean 'icarl'"):
        parse_config(["--model", "icarll", "--dataset", "seq-synth"])
    with pytest.raises(UserError, match="Did you mean 'seq-synth'"):
        parse_config(["--model", "sgd", "--dataset", "seq-synt"])
    with pytest.raises(UserError, match="Did you mean 'resnet18'"):
        parse_config(["--model", "sgd", "--dataset", "seq-synth", "--backbone", "resnet81"])


def test_bad_values_name_the_flag_and_range(main_runner):
    out = main_runner(["--model", "sgd", "--dataset", "seq-synth", "--lr", "-1"])
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--lr" in out.stderr and "minimum" in out.stderr
    with pytest.raises(UserError, match="--n_epochs: expected an integer, got 'two'"):
        parse_config(["--model", "sgd", "--dataset", "seq-synth", "--n_epochs", "two"])
    with pytest.raises(UserError, match="--optimizer: 'rmsprop' is not one of sgd, adam, adamw"):
        parse_config(["--model", "sgd", "--dataset", "seq-synth", "--optimizer", "rmsprop"])
    with pytest.raises(UserError, match="unknown flag --no_such_flag for model 'sgd'"):
        parse_config(["--model", "sgd", "--dataset", "seq-synth", "--no_such_flag", "1"])


def test_method_options_are_flags_with_help(main_runner):
    out = main_runner(["--model", "lwf", "--dataset", "seq-synth", "--help"])
    assert out.returncode == 0
    assert "--alpha" in out.stdout and "distillation" in out.stdout
    assert "--synth_train_per_class" in out.stdout
    cfg, _ = parse_config(["--model", "lwf", "--dataset", "seq-synth", "--alpha", "0.25"])
    assert cfg.method.alpha == 0.25 and cfg.sources["alpha"] == "cli"


def test_precedence_cli_yaml_method_dataset(tmp_path, monkeypatch):
    (tmp_path / "sgd.yaml").write_text(
        "default:\n  batch_size: 16\n"
        "seq-synth:\n  lr: 0.02\n  200:\n    n_epochs: 3\n")
    monkeypatch.setattr(config_mod, "CONFIG_DIR", tmp_path)
    monkeypatch.setattr(Sgd, "DEFAULTS", {"lr": 0.2, "optim_mom": 0.5})
    base = ["--model", "sgd", "--dataset", "seq-synth"]

    cfg, _ = parse_config(base)
    # method defaults beat dataset defaults (seq-synth says lr 0.05)
    assert (cfg.run.lr, cfg.sources["lr"]) == (0.2, "method defaults")
    assert (cfg.run.batch_size, cfg.sources["batch_size"]) == (32, "dataset defaults")
    assert (cfg.run.optimizer, cfg.sources["optimizer"]) == ("sgd", "default")

    cfg, _ = parse_config(base + ["--model_config", "best", "--buffer_size", "200"])
    assert (cfg.run.lr, cfg.sources["lr"]) == (0.02, "sgd.yaml:seq-synth")       # YAML beats method
    assert cfg.run.batch_size == 16 and cfg.run.n_epochs == 3
    assert cfg.run.optim_mom == 0.5

    cfg, _ = parse_config(base + ["--model_config", "best", "--buffer_size", "200", "--lr", "0.3"])
    assert (cfg.run.lr, cfg.sources["lr"]) == (0.3, "cli")                        # CLI beats YAML

    with pytest.raises(UserError, match="buffer sizes \\[200\\]"):
        parse_config(base + ["--model_config", "best", "--buffer_size", "500"])


def test_yaml_with_unknown_keys_is_rejected(tmp_path, monkeypatch):
    (tmp_path / "sgd.yaml").write_text("default:\n  learning_rate: 0.1\n")
    monkeypatch.setattr(config_mod, "CONFIG_DIR", tmp_path)
    with pytest.raises(UserError, match="unknown option 'learning_rate'"):
        parse_config(["--model", "sgd", "--dataset", "seq-synth", "--model_config", "default"])


def test_rehearsal_methods_need_a_memory(main_runner):
    out = main_runner(["--model", "er", "--dataset", "seq-synth"])
    assert out.returncode == 2 and "--buffer_size" in out.stderr and "Traceback" not in out.stderr


def test_resume_rejects_changes_to_results(tmp_path):
    with pytest.raises(UserError, match="no run at"):
        parse_config(["--resume", str(tmp_path / "nothing")])


def test_shipped_best_config_loads():
    cfg, _ = parse_config(["--model", "er", "--dataset", "seq-synth", "--buffer_size", "200", "--model_config", "best"])
    assert (cfg.run.lr, cfg.sources["lr"]) == (0.1, "er.yaml:seq-synth")
