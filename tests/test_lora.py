"""LoRA for CLIP fine-tuning (models/utils/lora.py, FinetuneClipModel's --lora): through peft the attention is adapted
and reaches the output (q/k/v and o get gradient; peft's own MultiheadAttention LoRA adds the o delta twice, so
attention is a parametrization), only LoRA parameters train, the step-0 model is the pretrained one, unknown targets
list the valid names, exports are plain open_clip weights that score as the LoRA model, the weight-space options
act on the effective weights by name (WiSE, WE, moving average, L2), and every task's update is folded in; shared
LoRA: literally shared masters, exact parameter counts of each mode against their formulas, q, k, v and o each
receive gradient."""
import pytest
import torch

from conftest import make_method, train_steps
from models.utils.lora import short_name
from models.utils.weight_space import snapshot
from utils.errors import UserError

#: the data flags of tests/test_orthogonal_gradients.py too: one rendered dataset for both files
DATA = ["--dataset", "seq-synth", "--seed", "0", "--synth_train_per_class", "2", "--synth_test_per_class", "1",
        "--quiet", "1", "--feature_cache", "off"]
TRAIN = ["--lr", "1e-3", "--warmup_iters", "1", "--batch_size", "8"]
R, D, HIDDEN, BLOCKS = 8, 128, 512, 4          # micro-clip: width 128, MLP 512, 4 image (and 3 text) blocks
ATTN = ["--lora_target_modules", "attn", "mlp.c_fc", "mlp.c_proj"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These small tensors run faster on one thread (and the tests do not depend on it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(*argv):
    return make_method("finetune", DATA, *TRAIN, "--lora", "1", *argv)


def lora_b_grads(model) -> dict[str, float]:
    return {n: float(p.grad.abs().sum()) for n, p in model.trained_parameters().items()
            if p.grad is not None and ("lora_B" in n)}


def one_backward(model, view) -> None:
    batch = next(view.task_data(0, "train").batches(8))
    model.meta_begin_task(view, 1, 1)
    model.optimizer.zero_grad(set_to_none=True)
    model.train_loss(batch["inputs"], batch["labels"]).backward()


@pytest.fixture(scope="module")
def peft_model():
    return make("--train_mode", "image")


def test_peft_lora_trains_only_lora_reaches_attention_and_exports_plain_weights(peft_model, capsys):
    view, model = peft_model
    # the formula: per block, q/k/v (r*D + 3D*r), o (2rD), c_fc and c_proj (r*D + r*4D each)
    per_block = (R * D + 3 * D * R) + 2 * R * D + 2 * (R * D + R * HIDDEN)
    trained = model.trained_parameters()
    assert sum(p.numel() for p in trained.values()) == BLOCKS * per_block == 65_536    # 114,688 with --train_mode whole
    assert all("lora_" in n and n.startswith("net.model.visual.") for n in trained)
    assert model.run_stats()["lora"]["trainable"] == 65_536
    test = next(view.task_data(0, "test").batches(16))["inputs"]
    from backbone.clip import create_clip
    pretrained = create_clip("micro-clip").model
    model.eval()
    with torch.no_grad():                    # B = 0: the model starts as the pretrained one
        assert torch.allclose(model.clip.encode_image(test), pretrained.encode_image(test), atol=1e-5)
    one_backward(model, view)
    grads = lora_b_grads(model)
    for site in ("attn.parametrizations.in_proj_weight", "attn.out_proj.parametrizations.weight", "mlp.c_fc",
                 "mlp.c_proj"):                 # every target, attention included, gets gradient in every block
        hits = [g for n, g in grads.items() if site in n]
        assert len(hits) == BLOCKS and all(g > 0 for g in hits), site
    before = {n: t.detach().clone() for n, t in model.state_dict().items()}
    train_steps(model, view, 0, steps=1, batch_size=8)
    optimised = {id(p) for g in model.optimizer.param_groups for p in g["params"]}
    assert optimised == {id(p) for p in model.trained_parameters().values()}
    after = model.state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all("lora_" in n for n in changed)         # the base weights are bit-identical
    model.eval()
    with torch.no_grad():
        features = model.clip.encode_image(test)
    exported = model.exported_module().state_dict()
    assert set(exported) == set(pretrained.state_dict())          # plain open_clip names, LoRA merged in
    pretrained.load_state_dict(exported)
    with torch.no_grad():
        assert torch.allclose(pretrained.encode_image(test), features, atol=1e-4)
    model.meta_end_task(view)                # the task's update folds into the weights: same function, B = 0
    with torch.no_grad():
        assert torch.allclose(model.clip.encode_image(test), features, atol=1e-4)
    assert all(not p.detach().any() for n, p in model.trained_parameters().items() if "lora_B" in n)


def test_unknown_targets_list_the_valid_names():
    from backbone.clip import create_clip
    from models.utils.lora import resolve_targets
    from scripts.list_clip_layers import rows
    clip = create_clip("micro-clip", weights=False).model
    with pytest.raises(UserError, match=r"unknown LoRA target module 'mlp.cfc'\. Did you mean 'mlp.c_fc'\?.*"
                                        r"Valid LoRA target modules: attn, attn.out_proj, mlp.c_fc, mlp.c_proj"):
        resolve_targets(clip, ["attn", "mlp.cfc"], {"image", "text"})
    chosen = resolve_targets(clip, ["attn.out_proj", "c_proj"], {"image"})      # suffixes, of the trained towers
    assert len(chosen) == 8 and all(n.startswith("visual.") for n in chosen)
    assert chosen["visual.transformer.resblocks.0.attn"] == {"o"}
    listed = {short_name(r[0]) for r in rows(clip, False, False)}
    assert {"attn", "attn.out_proj", "mlp.c_fc", "mlp.c_proj"} <= listed      # the script shows the valid names


@pytest.fixture(scope="module")
def shared_model():
    """Shared LoRA on the image tower, with the weight-space options the last test exercises (inert until trained)."""
    return make("--lora_shared", "1", "--train_mode", "image", "--we", "--avg_freq", "1", "--wise_merge", "0.5",
                "--l2", "1", "--n_iters", "2", *ATTN)


@pytest.mark.parametrize("split, count", [(False, 2 * R * D + 2 * (R * D + R * HIDDEN)),
                                          (True, 4 * 2 * R * D + 2 * (R * D + R * HIDDEN))])
def test_shared_lora_shares_masters_and_every_projection_gets_gradient(split, count, shared_model, capsys):
    if split:
        view, model = make("--lora_shared", "1", "--lora_shared_split_qkvo", "1", "--train_mode", "image", *ATTN)
        assert f"{count:,} trainable parameters" in capsys.readouterr().out    # the trainable fraction is printed
    else:
        view, model = shared_model
    # one attention master (or one per projection), one c_fc and one c_proj master for all the blocks (on
    # micro-clip the two towers would share them too: same widths and heads); attention and MLP never share
    assert sum(p.numel() for p in model.trained_parameters().values()) == count
    blocks = list(model.clip.model.visual.transformer.resblocks)
    qkv = [b.attn.parametrizations.in_proj_weight[0] for b in blocks]
    out = [b.attn.out_proj.parametrizations.weight[0] for b in blocks]
    fc = [b.mlp.c_fc.parametrizations.weight[0] for b in blocks]
    assert all(m.q_lora_A is qkv[0].q_lora_A and m.v_lora_B is qkv[0].v_lora_B for m in qkv)
    assert all(m.lora_A is out[0].lora_A for m in out) and all(m.lora_B is fc[0].lora_B for m in fc)
    assert fc[0].lora_A is not out[0].lora_A
    assert (qkv[0].q_lora_A is out[0].lora_A and qkv[0].k_lora_A is qkv[0].q_lora_A) == (not split)
    with torch.no_grad():                    # W + s B A on each of q, k, v and o, where MHA reads them
        for p in model.trained_parameters().values():
            p.normal_()
        d = qkv[0].delta()
        o = out[0].delta()
        assert d.shape == (3 * D, D) and all(float(d[i * D:(i + 1) * D].abs().sum()) > 0 for i in range(3))
        assert torch.allclose(blocks[2].attn.in_proj_weight,
                              blocks[2].attn.parametrizations.in_proj_weight.original + d)
        out_proj = blocks[3].attn.out_proj
        assert torch.allclose(out_proj.weight, out_proj.parametrizations.weight.original + o)
        assert torch.equal(d[:D], o) == (not split)
    one_backward(model, view)
    masters = {"q": qkv[0].q_lora_B, "k": qkv[0].k_lora_B, "v": qkv[0].v_lora_B, "o": out[0].lora_B}
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in masters.values())
    if split:                                # one master per projection: each one's gradient is its own
        assert len({id(p) for p in masters.values()}) == 4


def test_weight_space_options_act_on_the_effective_weights_by_name(shared_model):
    """--we --avg_freq 1 --wise_merge 0.5 --l2 1 over 2 steps, on the merged model's names and values."""
    from models.utils.weight_space import AnchorPull, l2_penalty
    view, model = shared_model
    model.meta_begin_task(view, 2, 1)
    start = snapshot(model.weights_module())
    key = "net.model.visual.transformer.resblocks.0.attn.in_proj_weight"
    assert key in start and not any("lora" in n for n in start)       # the merged model's own names
    assert float(l2_penalty(model.weights_module().trained_weights(), start).detach()) == 0
    seen = [start]
    model.train()
    for batch in list(view.task_data(0, "train").batches(8))[:2]:
        model.meta_observe(batch, 0)
        seen.append(snapshot(model.weights_module()))
    penalty = l2_penalty(model.weights_module().trained_weights(), start)
    assert float(penalty.detach()) > 0 and penalty.requires_grad      # sum ||W + BA - W_start||^2, through A and B
    assert not torch.equal(seen[2][key], start[key])
    model.meta_end_task(view)
    # the WE mean of the start and the snapshots after steps 0, 1 and the last, then WiSE 0.5 toward the start
    mean = (seen[0][key] + seen[1][key] + 2 * seen[2][key]) / 4
    merged = snapshot(model.weights_module())
    assert torch.allclose(merged[key], 0.5 * mean + 0.5 * start[key], atol=1e-5)
    exported = model.exported_module().state_dict()
    assert torch.allclose(exported[key.removeprefix("net.model.")], merged[key], atol=1e-6)
    # the moving-average pull moves the effective weights toward the anchor, and leaves the adapters alone
    with torch.no_grad():
        for p in model.trained_parameters().values():
            p.normal_()
    lora = {n: p.detach().clone() for n, p in model.trained_parameters().items()}
    before = snapshot(model.weights_module())
    AnchorPull(start, 0.75).pull(model.weights_module())
    assert torch.allclose(snapshot(model.weights_module())[key], 0.75 * before[key] + 0.25 * start[key], atol=1e-5)
    assert all(torch.equal(p, lora[n]) for n, p in model.trained_parameters().items())
