"""The method contract catches a newcomer's mistakes with one line that names the file and the fix (issue 17)."""
import argparse
import collections
import json
import re
from dataclasses import dataclass

import pytest
import torch

import main as tusk_main
from conftest import REPO, keep_checkpoint_after
from models import list_models
from models.sgd import Sgd
from models.utils.continual_model import ContinualModel, MethodContractWarning
from utils import options as opt
from utils import registry
from utils.config import _full_parser, parse_config
from utils.errors import UserError, unknown_name_error
from utils.experiment import build
from utils.results import RunRecorder
from utils.run_options import RunOptions
from utils.seeding import seed_everything
from utils.training import TaskLoop

TINY = ["--dataset", "seq-synth", "--synth_train_per_class", "6", "--synth_test_per_class", "2", "--quiet", "1",
        "--batch_size", "16", "--n_iters", "4"]
HERE = "tests/test_authoring.py"


def one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text, text
    return text


# ---- two methods with one NAME ---------------------------------------------------------------------------
def test_two_methods_with_one_name_are_reported_at_discovery(tmp_path, monkeypatch):
    package = tmp_path / "clash_methods"
    package.mkdir()
    (package / "__init__.py").write_text("")
    sgd_source = (REPO / "models" / "sgd.py").read_text()
    (package / "sgd.py").write_text(sgd_source)
    (package / "sgd_copy.py").write_text(sgd_source.replace("class Sgd(", "class MySgd("))   # kept NAME = "sgd"
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError) as err:
        registry.names("clash_methods", "models.utils.continual_model.ContinualModel")
    assert one_line(err.value) == ("two classes are registered as 'sgd': clash_methods/sgd.py (Sgd) and "
                                   "clash_methods/sgd_copy.py (MySgd); give one of them another NAME")


# ---- hooks ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("typo, hook", [("end_tasks", "end_task"), ("begin_epochs", "begin_epoch")])
def test_a_misspelt_hook_warns(typo, hook):
    with pytest.warns(MethodContractWarning) as caught:
        type("Typo", (Sgd,), {typo: lambda self, *a: None, "__module__": __name__})
    assert [one_line(w.message) for w in caught] == [
        f"{HERE}: Typo.{typo} is not a hook, so the loop never calls it: did you mean {hook}? "
        f"(rename it, or start its name with _ if it is a helper)"]


def test_helpers_and_hooks_do_not_warn(recwarn):
    class Fine(Sgd):
        def end_task(self, dataset): ...

        def _end_tasks(self): ...             # private helper

        def fisher_of(self, data): ...        # not close to any hook

    assert not [w for w in recwarn if issubclass(w.category, MethodContractWarning)]


def test_a_hook_with_the_wrong_signature_fails_at_class_creation():
    with pytest.raises(UserError) as err:
        class Wrong(Sgd):
            def end_task(self):
                pass
    assert one_line(err.value) == (f"{HERE}: test_a_hook_with_the_wrong_signature_fails_at_class_creation.<locals>."
                                   f"Wrong.end_task(self) cannot be called as the loop calls it, end_task(dataset): "
                                   f"define it as def end_task(self, dataset)")
    with pytest.raises(UserError, match=r"Wrong2\.begin_epoch\(self, dataset\) cannot be called .* "
                                        r"def begin_epoch\(self, epoch, dataset\)$"):
        class Wrong2(Sgd):
            def begin_epoch(self, dataset):
                pass
    with pytest.raises(UserError, match=r"Wrong3\.observe\(self, x, y\): observe receives the batch by field name; "
                                        r"'x' is not one: name its parameters among inputs, labels, "
                                        r"not_aug_inputs, indexes, epoch$"):
        class Wrong3(ContinualModel):
            def observe(self, x, y):
                return 0.0


# ---- options -------------------------------------------------------------------------------------------
def test_an_option_that_clashes_with_a_run_option_says_so():
    @dataclass
    class LrOptions:
        lr: float = opt.option(0.1, "my own learning rate")

    with pytest.raises(UserError) as err:
        type("Clash", (Sgd,), {"NAME": "clash", "Options": LrOptions, "__module__": __name__})
    assert one_line(err.value) == (f"{HERE}: Clash.Options: option --lr of test_an_option_that_clashes_with_a_run_"
                                   f"option_says_so.<locals>.LrOptions clashes with the run option --lr: rename it "
                                   f"(e.g. --clash_lr), or set the run option's default for this method in DEFAULTS = "
                                   f"{{'lr': ...}}")
    parser = argparse.ArgumentParser()                         # a dataset's or backbone's options, at parse time
    taken: set[str] = set()
    opt.add_to_parser(parser, RunOptions, taken=taken)
    with pytest.raises(UserError, match=r"LrOptions: option --lr clashes with the run option --lr: rename it, "
                                        r"or set the run option's default in the class's DEFAULTS$"):
        opt.add_to_parser(parser, LrOptions, taken=taken)


def test_options_that_are_not_a_dataclass_name_the_class():
    class PlainOptions:
        alpha: float = 0.5

    with pytest.raises(UserError) as err:
        type("NoDataclass", (Sgd,), {"Options": PlainOptions, "__module__": __name__})
    assert one_line(err.value) == (f"{HERE}: NoDataclass.Options (test_options_that_are_not_a_dataclass_name_the_"
                                   f"class.<locals>.PlainOptions) is not a dataclass: decorate it with @dataclass and "
                                   f"make its fields with utils.options.option(...)")
    with pytest.raises(UserError, match=r"PlainOptions is not a dataclass: decorate it with @dataclass"):
        opt.add_to_parser(argparse.ArgumentParser(), PlainOptions)


def test_help_says_which_defaults_the_dataset_overrides():
    cfg, _ = parse_config(["--model", "sgd", *TINY])
    from datasets import get_dataset_class
    from models import get_model_class
    text = " ".join(_full_parser(get_model_class("sgd"), get_dataset_class("seq-synth"), type(cfg.net))
                    .format_help().split())
    assert "learning rate range [0.0, inf] (default: 0.05, from seq-synth's DEFAULTS; otherwise 0.1)" in text
    assert "(default: 5, from seq-synth's DEFAULTS; otherwise 1)" in text          # --n_epochs


# ---- state in checkpoints ------------------------------------------------------------------------------
class PlainState(Sgd):
    """A naive EWC-like method, as a newcomer writes it: its state is a dict of tensors in a plain attribute and a
    buffer first registered as None."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.anchor = None
        self.register_buffer("weight", None)

    def observe(self, inputs, labels, not_aug_inputs, epoch=None):
        self.optimizer.zero_grad()
        loss = self.loss(self.net(inputs), labels)
        if self.anchor is not None:
            params = self.named_trainable_parameters()
            loss = loss + self.weight * sum(((p - self.anchor[n]) ** 2).sum() for n, p in params.items())
        self.backward_and_step(loss)
        return loss.item()

    def end_task(self, dataset):
        self.anchor = {n: p.detach().clone() for n, p in self.named_trainable_parameters().items()}
        self.weight = torch.tensor(50.0 * (self.current_task + 1))


_DATA = {}


def _loop(cls, run_dir, stop_after, resume=False, keep_after=None):
    """``cls`` trained on the first ``stop_after`` tasks of TINY through the task loop (continuing ``run_dir``'s
    checkpoint with ``resume``); ``keep_after=(k, DIR)`` copies the checkpoint written after task k into DIR."""
    cfg, _ = parse_config(["--model", "sgd", *TINY, "--stop_after", str(stop_after), "--results_path", str(run_dir)])
    if "seq-synth" not in _DATA:
        _DATA["seq-synth"] = build(cfg)[0]
    dataset = _DATA["seq-synth"]
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.run.seed)
    model = cls(Sgd.create_backbone("small-cnn", dataset, cfg.net), dataset, cfg.run, cfg.method, "cpu")
    loop = TaskLoop(model, dataset, RunRecorder(run_dir, dataset.N_TASKS, {}))
    if keep_after is not None:
        keep_checkpoint_after(loop, *keep_after)
    if resume:
        loop.restore()
    loop.run()
    return model, loop.recorder


def test_tensor_state_in_plain_attributes_and_none_buffers_resumes_identically(tmp_path):
    full, full_rec = _loop(PlainState, tmp_path / "full", 2, keep_after=(1, tmp_path / "part"))
    resumed, resumed_rec = _loop(PlainState, tmp_path / "part", 2, resume=True)
    assert resumed_rec.class_il == full_rec.class_il and len(full_rec.class_il) == 2
    assert float(resumed.weight) == float(full.weight) == 100.0
    assert all(torch.equal(resumed.anchor[n], full.anchor[n]) for n in full.anchor)
    assert all(torch.equal(a, b) for a, b in zip(resumed.net.state_dict().values(), full.net.state_dict().values()))


class DequeState(Sgd):
    def end_task(self, dataset):
        self.history = collections.deque([next(iter(self.net.parameters())).detach().clone()])


def test_tensor_state_a_checkpoint_cannot_restore_is_refused_at_the_first_checkpoint(tmp_path):
    with pytest.raises(UserError) as err:
        _loop(DequeState, tmp_path, 1)
    assert one_line(err.value) == (f"{HERE}: DequeState.history holds tensors in a deque that a checkpoint cannot "
                                   f"restore, so --resume would lose them: keep them in a tensor, or a dict, list or "
                                   f"tuple of tensors, or register_buffer them (or start the name with _ if it is a "
                                   f"cache rebuilt on its own)")


# ---- a diverged run ------------------------------------------------------------------------------------
def test_a_diverged_run_is_marked_and_names_the_likely_causes(tmp_path, monkeypatch, capsys):
    def end_task(self, dataset):
        with torch.no_grad():
            next(iter(self.net.parameters())).fill_(float("nan"))

    monkeypatch.setattr(Sgd, "end_task", end_task)
    code = tusk_main.main(["--model", "sgd", *TINY, "--stop_after", "2", "--results_path", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0
    assert re.fullmatch(r"error: net\.\S+ became NaN or infinite by the end of task 1: "
                        r"try a lower --lr \(it is 0\.05\)", err), err
    run_dir = next(tmp_path.glob("seq-synth/sgd/*"))
    assert json.loads((run_dir / "results.json").read_text())["status"] == "diverged"
    assert not (run_dir / "checkpoint.pt").exists()              # checked before the task's checkpoint
    events = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "end" and events[-1]["status"] == "diverged"


def test_the_divergence_message_names_the_methods_own_weights():
    from conftest import make_method
    _, model = make_method("ewc_on", TINY, "--e_lambda", "1e6", "--lr", "0.3")
    assert model.divergence_hint() == ("try a lower --lr (it is 0.3), or smaller weights of ewc_on's own terms "
                                       "(--e_lambda 1e+06, --gamma 1)")


def test_the_divergence_check_leaves_infinite_buffers_alone():
    """Buffers may hold -inf on purpose (open_clip's causal attention mask in every CLIP method): only parameters
    count."""
    from conftest import make_method
    _, model = make_method("sgd", TINY)
    model.net.register_buffer("attn_mask", torch.full((4, 4), float("-inf")).triu(1), persistent=False)
    assert model.non_finite_parameters() == []
    with torch.no_grad():
        next(p for p in model.parameters() if p.is_floating_point()).view(-1)[0] = float("inf")
    assert len(model.non_finite_parameters()) == 1


# ---- smaller fixes -------------------------------------------------------------------------------------
def test_quiet_still_prints_the_summary(tmp_path, capsys):
    assert tusk_main.main(["--model", "sgd", *TINY, "--stop_after", "1", "--results_path", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "last acc" in out and "BWT" in out and "run directory" not in out


def test_the_readme_error_example_lists_every_method():
    line = f"error: {unknown_name_error('model', 'nosuch', list_models())}"
    assert len(list_models()) >= 19 and line in (REPO / "README.md").read_text()
