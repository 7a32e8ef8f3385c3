"""Weight-space options (models/utils/weight_space.py and FinetuneClipModel's --wise_merge, --we, --we_wise,
--moving_avg, --l2): everything pairs tensors by name (a reordered state merges the same, a renamed or reshaped one is
refused), buffers are merged (a -inf mask stays -inf), ZSCL's arithmetic is reproduced exactly (WiSE, the WE mean of
the start and the snapshots, WE-WiSE, the anchor pull with a fixed or following anchor, the L2 gradient 2 l (theta -
theta0)); in the model the snapshots are taken after steps 0, N, 2N, ... and ZSCL's extra last iteration, the task's
model becomes the ensemble, the extreme coefficients give exactly the reference weights, the flags work alone; end to
end on synth-mtil the saved model is 0.8 theta_task + 0.2 theta_0, and a resumed run is identical."""
import json
import random

import pytest
import torch
from torch import nn

from conftest import only_run_dir, train_steps
from models.utils.weight_space import (AnchorPull, WeightEnsemble, check_compatible, l2_penalty, load_by_name,
                                       merge_by_name, merge_into, snapshot)
from test_finetune import make
from utils.atomic import load_torch
from utils.config import parse_config
from utils.errors import UserError
from utils.experiment import run_experiment

MTIL = ["--dataset", "synth-mtil", "--seed", "0", "--synth_train_per_class", "10", "--synth_test_per_class", "5",
        "--quiet", "1"]


def net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    model[1].running_mean.normal_()
    model[1].running_var.uniform_(0.5, 2)
    model[1].num_batches_tracked.fill_(seed)
    model.register_buffer("mask", torch.full((2, 2), float("-inf")).triu(1))
    return model


# ---- pure functions -------------------------------------------------------------------------------
def test_merge_pairs_by_name_and_refuses_other_names_or_shapes():
    a, b = net(0), net(1)
    merged = merge_by_name(a, b, 0.3)
    items = list(b.state_dict().items())
    random.Random(0).shuffle(items)
    assert list(dict(items)) != list(b.state_dict())
    shuffled = merge_by_name(a, dict(items), 0.3)          # the reference's order does not matter
    assert all(torch.equal(merged[n], shuffled[n]) for n in merged)
    renamed = {("2.w" if n == "2.weight" else n): t for n, t in b.state_dict().items()}
    with pytest.raises(UserError, match=r"missing from the reference \(2\.weight\).*only in the reference \(2\.w\)"):
        merge_by_name(a, renamed, 0.5)
    other = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 5))
    other.register_buffer("mask", torch.zeros(2, 2))
    with pytest.raises(UserError, match=r"shape mismatch.*2\.weight \(2, 3\) vs \(5, 3\)"):
        merge_into(a, other, 0.5)
    with pytest.raises(UserError, match="differ"):
        WeightEnsemble(a).update(other)
    with pytest.raises(UserError, match="differ"):
        load_by_name(a, {n: t for n, t in b.state_dict().items() if n != "mask"})
    check_compatible(a, b)                                  # same names and shapes: fine


def test_wise_merge_is_exact_and_includes_buffers():
    a, b = net(0), net(1)
    merged = merge_by_name(a, b, 0.8)
    for name, t in a.state_dict().items():
        r = b.state_dict()[name]
        if name == "1.num_batches_tracked":
            assert torch.equal(merged[name], t)             # not floating point: the target's
        elif name == "mask":
            assert torch.equal(merged[name], t)             # -inf stays -inf (no NaN from -inf * 0)
        else:
            assert torch.equal(merged[name], t * 0.8 + r * (1 - 0.8)), name
    assert not torch.equal(merged["1.running_mean"], a.state_dict()["1.running_mean"])
    merge_into(a, b, 0.0)                                   # alpha 0: exactly the reference
    assert all(torch.equal(t, b.state_dict()[n]) for n, t in a.state_dict().items() if "num_batches" not in n)


def test_weight_ensemble_is_the_mean_of_the_start_and_the_snapshots():
    start, snaps = net(0), [net(s) for s in (1, 2, 3, 4)]
    ens = WeightEnsemble(start)
    for s in snaps:
        ens.update(s)
    assert ens.n == 4
    target = net(9)
    ens.apply_to(target)
    for name, t in target.state_dict().items():
        if t.is_floating_point() and name != "mask":
            expected = torch.stack([start.state_dict()[name]] + [s.state_dict()[name] for s in snaps]).mean(0)
            assert torch.allclose(t, expected, atol=1e-6), name
    assert torch.equal(target.mask, start.mask)
    restored = WeightEnsemble(net(5))
    restored.load_state_dict(ens.state_dict())
    assert restored.n == 4 and all(torch.equal(restored.mean[n], ens.mean[n]) for n in ens.mean)


def test_we_wise_pulls_the_mean_toward_the_fixed_weights_after_each_update():
    start, fixed, snaps = net(0), net(7), [net(1), net(2)]
    ens = WeightEnsemble(start, fixed=fixed, fixed_alpha=0.9)
    for s in snaps:
        ens.update(s)
    w = lambda m: m.state_dict()["0.weight"]
    m1 = ((w(start) * 1 + w(snaps[0])) / 2) * 0.9 + w(fixed) * (1 - 0.9)
    m2 = ((m1 * 2 + w(snaps[1])) / 3) * 0.9 + w(fixed) * (1 - 0.9)
    assert torch.allclose(ens.mean["0.weight"], m2, atol=1e-6)
    with pytest.raises(ValueError):
        WeightEnsemble(start, fixed=fixed)


def test_anchor_pull_moves_the_training_weights_toward_a_fixed_or_following_anchor():
    w = lambda m: m.state_dict()["0.weight"].clone()
    model, anchor = net(1), net(0)
    theta0, a = w(model), w(anchor)
    pull = AnchorPull(anchor, 0.75)
    pull.pull(model)
    assert torch.equal(w(model), theta0 * 0.75 + a * (1 - 0.75))
    pull.pull(model)                                        # the anchor stays the same
    assert torch.allclose(w(model), (theta0 * 0.75 + a * 0.25) * 0.75 + a * 0.25)

    model = net(1)
    follow = AnchorPull(net(0), 0.5, follow=True)
    follow.pull(model)                                      # toward the start; the anchor becomes theta0
    after_first = w(model)
    with torch.no_grad():
        model[0].weight.add_(1.0)                           # "training" between pulls
    moved = w(model)
    follow.pull(model)
    assert torch.allclose(w(model), moved * 0.5 + theta0 * 0.5)
    assert torch.allclose(follow.anchor["0.weight"], moved) and not torch.equal(after_first, moved)


def test_l2_gradient_is_two_lambda_times_the_distance():
    model, ref = net(1), net(0).state_dict()
    lam = 0.3
    (lam * l2_penalty(model, ref)).backward()
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, 2 * lam * (p.detach() - ref[name]), atol=1e-6), name
    expected = sum(((p - ref[n]) ** 2).sum() for n, p in model.named_parameters())
    assert torch.allclose(l2_penalty(dict(model.named_parameters()), ref), expected)
    with pytest.raises(UserError, match="missing"):
        l2_penalty(model, {n: t for n, t in ref.items() if n != "0.bias"})


# ---- in FinetuneClipModel -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("feature-cache")


def fc_model(cache_dir, *argv):
    """finetune in fc mode (cached features, the head trains) on a small synth-mtil."""
    return make(cache_dir, "--train_mode", "fc", "--lr", "1e-2", "--warmup_iters", "1", *argv, data=MTIL)


def weights(model) -> dict:
    return snapshot(model.weights_module())


def test_the_flags_work_alone_and_exclusive_ones_are_refused():
    config, _ = parse_config(["--model", "finetune", *MTIL, "--we", "--wise_merge", "--avg_freq", "10"])
    assert (config.method.we, config.method.wise_merge, config.method.avg_freq) == (True, 0.8, 10)
    config, _ = parse_config(["--model", "finetune", *MTIL, "--we_wise", "--moving_avg", "0.9", "--we", "0"])
    assert (config.method.we_wise, config.method.moving_avg, config.method.we) == (0.98, 0.9, False)
    config, _ = parse_config(["--model", "finetune", *MTIL, "--moving_avg"])
    assert config.method.moving_avg == 0.999 and config.method.wise_merge is None and config.method.l2 == 0.0
    with pytest.raises(UserError, match="above the maximum"):
        parse_config(["--model", "finetune", *MTIL, "--wise_merge", "1.5"])


def test_exclusive_averages_are_refused(cache_dir):
    with pytest.raises(UserError, match="--we and --moving_avg exclude one another"):
        fc_model(cache_dir, "--we", "--moving_avg")


@pytest.mark.parametrize("steps, snapshots", [(5, 3), (4, 3)])
def test_we_snapshots_after_steps_0_n_2n_and_zscls_last_iteration(cache_dir, monkeypatch, steps, snapshots):
    """--avg_freq 2: snapshots after the steps 0, 2, 4 (5 steps), or 0, 2 and the extra last iteration (4 steps,
    ZSCL's loop runs one more at lr 0); the model ends as the mean of its start and those snapshots."""
    view, model = fc_model(cache_dir, "--we", "--avg_freq", "2")
    taken, update = [], WeightEnsemble.update
    monkeypatch.setattr(WeightEnsemble, "update", lambda self, m: (taken.append(snapshot(m)), update(self, m)))
    start = weights(model)
    train_steps(model, view, 0, steps=steps, batch_size=8)
    trained = weights(model)
    model.meta_end_task(view)
    assert len(taken) == snapshots
    assert not torch.equal(taken[0]["head.weight"], start["head.weight"])     # after the first step
    assert torch.equal(taken[-1]["head.weight"], trained["head.weight"])      # the last one: the final weights
    expected = torch.stack([start["head.weight"]] + [t["head.weight"] for t in taken]).mean(0)
    assert torch.allclose(model.head.weight, expected, atol=1e-5)
    assert not torch.allclose(model.head.weight, trained["head.weight"])


@pytest.mark.parametrize("argv, reference", [
    (["--wise_merge", "0", "--wise_ft_model", "zeroshot"], "zeroshot"),
    (["--wise_merge", "0"], "start"),
    (["--wise_merge", "1"], "trained"),
    (["--we_wise", "0"], "start"),
    (["--moving_avg", "0", "--mv_avg_model", "zeroshot", "--avg_freq", "3"], "zeroshot"),
    (["--moving_avg", "1", "--mv_avg_model", "t"], "trained"),
])
def test_extreme_coefficients_give_exactly_the_reference_weights(cache_dir, argv, reference):
    """Two tasks, so that the task-2 start differs from zero-shot; each option's coefficient at 0 or 1 must land
    exactly on the reference it names, for the head and every CLIP buffer and parameter."""
    view, model = fc_model(cache_dir, *argv)
    zero_shot = weights(model)
    train_steps(model, view, 0, steps=3, batch_size=8)
    model.meta_end_task(view)
    start = weights(model)
    train_steps(model, view, 1, steps=3, batch_size=8)
    trained = weights(model)
    model.meta_end_task(view)
    expected = {"zeroshot": zero_shot, "start": start, "trained": trained}[reference]
    got = weights(model)
    assert all(torch.equal(got[n], expected[n]) for n in got), reference
    if reference == "trained":
        assert not torch.equal(got["head.weight"], start["head.weight"])
    else:
        assert not torch.equal(got["head.weight"], trained["head.weight"])


def test_l2_adds_two_lambda_times_the_distance_to_the_task_start_to_the_gradient(cache_dir, monkeypatch):
    view, model = fc_model(cache_dir, "--l2", "0.5")
    model.meta_begin_task(view, 1, 1)
    with torch.no_grad():
        model.head.weight.add_(0.25)
    monkeypatch.setattr(model.optimizer, "step", lambda *a, **k: None)
    model.optimizer.zero_grad()
    model.backward_and_step(model.head.weight.sum() * 0)    # a task loss with no gradient
    assert torch.allclose(model.head.weight.grad, torch.full_like(model.head.weight, 2 * 0.5 * 0.25))


# ---- whole runs -----------------------------------------------------------------------------------
def run(tmp_path, *argv) -> dict:
    config, _ = parse_config(["--model", "finetune", *MTIL, "--n_iters", "5", "--batch_size", "16", "--lr", "1e-4",
                              "--warmup_iters", "2", "--feature_cache", "off", "--results_path", str(tmp_path),
                              *argv])
    run_dir = run_experiment(config)
    return load_torch(run_dir / "checkpoint.pt", map_location="cpu")["model"]["model"]


@pytest.mark.slow
def test_wise_merge_end_to_end_saves_the_formula(tmp_path):
    """finetune --wise_merge 0.8 on synth-mtil: after task 1 the saved CLIP is 0.8 x the fine-tuned weights (the same
    run without the merge) + 0.2 x zero-shot CLIP, tensor by tensor."""
    plain = run(tmp_path / "plain", "--stop_after", "1")
    merged = run(tmp_path / "merged", "--stop_after", "1", "--wise_merge", "0.8")
    _, fresh = make(tmp_path / "cache", data=MTIL)
    zero_shot = fresh.state_dict()
    key = "net.model.visual.transformer.resblocks.0.attn.in_proj_weight"
    assert not torch.equal(plain[key], zero_shot[key])
    for name, t in plain.items():
        if name.startswith("net."):
            assert torch.equal(merged[name], torch.where(t == zero_shot[name], t, t * 0.8 + zero_shot[name] * (1 - 0.8))
                               ), name


@pytest.mark.slow
def test_resume_with_weight_space_options_is_identical(tmp_path):
    argv = ["--we", "--avg_freq", "2", "--l2", "1", "--wise_merge", "0.8"]
    full = run(tmp_path / "full", "--stop_after", "2", *argv)
    run(tmp_path / "part", "--stop_after", "1", *argv)
    run_dir = only_run_dir(tmp_path / "part")
    resume, resume_dir = parse_config(["--resume", str(run_dir), "--stop_after", "2", "--quiet", "1"])
    run_experiment(resume, resume_dir)
    resumed = load_torch(run_dir / "checkpoint.pt", map_location="cpu")["model"]["model"]
    assert all(torch.equal(resumed[n], full[n]) for n in full)
    results = [json.loads((only_run_dir(tmp_path / d) / "results.json").read_text()) for d in ("full", "part")]
    assert results[0]["accuracy_matrix"] == results[1]["accuracy_matrix"]
