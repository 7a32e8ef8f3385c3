"""CLAP4CLIP: its modules against naive references, per-image VGA independence, frozen old heads,
and end to end on seq-synth (learns the newest task where zero-shot, CLIP-Adapter and 'w/o VI' do not, and
stays within a few points of zero-shot overall: it does not beat it on this world, see the README)."""
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import load_results, only_run_dir, run_main, train_steps
from models.utils.clap_modules import VariationalHead, VisualGuidedAttention, gaussian_kl, task_block_mask, \
    template_statistics
from utils.config import parse_config
from utils.evaluate import evaluate_step
from utils.exemplar_selection import SELECTORS
from utils.experiment import build
from utils.schedulers import warmup_cosine

SMALL = ["--dataset", "seq-synth", "--seed", "0", "--synth_train_per_class", "20", "--synth_test_per_class", "10"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("feature-cache")


def make_model(cache_dir, *extra):
    config, _ = parse_config(["--model", "clap4clip", *SMALL, "--buffer_size", "100", "--quiet", "1",
                              "--feature_cache", str(cache_dir), *extra])
    return build(config)


def test_best_config_is_the_papers_main_setting():
    config, _ = parse_config(["--model", "clap4clip", "--dataset", "seq-cifar100", "--model_config", "best"])
    assert config.backbone == "ViT-B/16" and config.sources["backbone"] == "clap4clip.yaml:seq-cifar100"
    run, method = config.run, config.method
    assert (run.buffer_size, run.batch_size, run.n_epochs, run.lr) == (2000, 32, 5, 0.001)
    assert run.class_order == "seed1993_run"
    assert (run.feature_views, run.eval_batch_size, method.replay) == (2, 32, "append")          # flips
    assert (method.forward_times, method.beta, method.finetune_epochs, method.prompt) == (20, 15.0, 2, "hand")
    # the command line still wins
    config, _ = parse_config(["--model", "clap4clip", "--dataset", "seq-cifar100", "--model_config", "best",
                              "--backbone", "micro-clip"])
    assert config.backbone == "micro-clip" and config.sources["backbone"] == "cli"


def test_vga_per_image_context_ignores_the_rest_of_the_batch():
    torch.manual_seed(0)
    vga = VisualGuidedAttention(16, heads=2).eval()
    text, images = torch.randn(6, 16), torch.randn(5, 16)
    mask = task_block_mask([3, 3], "cpu")
    together = vga(text, images, mask, "image")
    alone = torch.stack([vga(text, images[i:i + 1], mask, "image")[0] for i in range(5)])
    assert together.shape == (5, 6, 16) and torch.allclose(together, alone, atol=1e-5)
    # the shortcut equals real attention over a one-element memory
    q = vga.norms[0](text[None] + vga.self_attn(text[None], text[None], text[None], attn_mask=mask)[0])
    full = vga.cross_attn(q.expand(5, -1, -1), images[:, None], images[:, None])[0]
    assert torch.allclose(vga._single_key_attention(images, 6).expand_as(full), full, atol=1e-5)
    # the original batch context does depend on the other images
    batch = vga(text, images, mask, "batch")
    assert batch.shape == (6, 16) and not torch.allclose(batch, vga(text, images[:2], mask, "batch"), atol=1e-3)


def test_vga_is_torchs_decoder_layer_with_its_default_width():
    """CLAP4CLIP's VGA is nn.TransformerDecoder(nn.TransformerDecoderLayer(d_model=D, nhead, gelu, batch_first), 1)
    with the default dim_feedforward 2048 whatever D: same parameter count (4,204,032 at D = 512, 1 head) and, with
    its weights, the same output for a batch-wide context."""
    vga = VisualGuidedAttention(512, heads=1)
    assert vga.ffn[0].out_features == 2048 and VisualGuidedAttention(128).ffn[0].out_features == 2048
    assert sum(p.numel() for p in vga.parameters()) == 4_204_032
    torch.manual_seed(1)
    ours = VisualGuidedAttention(32, heads=2).eval()
    layer = torch.nn.TransformerDecoderLayer(32, 2, activation="gelu", batch_first=True).eval()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in layer.parameters())
    ref = torch.nn.TransformerDecoder(layer, 1).eval()
    with torch.no_grad():
        ours.self_attn.load_state_dict(layer.self_attn.state_dict())
        ours.cross_attn.load_state_dict(layer.multihead_attn.state_dict())
        for mine, theirs in zip((ours.ffn[0], ours.ffn[3]), (layer.linear1, layer.linear2)):
            mine.load_state_dict(theirs.state_dict())
        for mine, theirs in zip(ours.norms, (layer.norm1, layer.norm2, layer.norm3)):
            mine.load_state_dict(theirs.state_dict())
    text, images, mask = torch.randn(6, 32), torch.randn(5, 32), task_block_mask([3, 3], "cpu")
    expected = ref(text[None], images[None], tgt_mask=mask)[0]
    assert torch.allclose(ours(text, images, mask, "batch") + text, expected + text, atol=1e-5)


def test_vga_image_context_drops_attention_per_query_and_key():
    """nn.MultiheadAttention drops attention weights: with one key per query, each (image, class, head) keeps its
    head's whole value (x 1/(1-p)) or loses it, never single value elements."""
    torch.manual_seed(0)
    vga = VisualGuidedAttention(16, heads=2, dropout=0.5).train()
    images = torch.randn(40, 16)
    out = vga._single_key_attention(images, 7)                             # (40, 7, 16)
    a = vga.cross_attn
    value = torch.nn.functional.linear(images, a.in_proj_weight[32:], a.in_proj_bias[32:]).view(40, 2, 8)
    per_head = torch.einsum("bhk,dhk->bhd", value, a.out_proj.weight.view(16, 2, 8))   # (40, 2, 16)
    combos = torch.stack([c0 * per_head[:, 0] + c1 * per_head[:, 1] + a.out_proj.bias
                          for c0 in (0.0, 2.0) for c1 in (0.0, 2.0)], 1)             # the 4 possible outcomes
    gaps = (out[:, :, None] - combos[:, None]).abs().amax(-1)                          # (40, 7, 4)
    assert (gaps.amin(-1) < 1e-5).all()                                   # every output is one of them
    chosen = gaps.argmin(-1)
    assert 0.15 < (chosen == 0).float().mean() < 0.35 and len(chosen.unique()) == 4    # both heads dropped: ~1/4
    assert not torch.equal(out[:, 0], out[:, 1])                          # drawn per query, not per image
    vga.eval()
    assert vga._single_key_attention(images, 7).shape == (40, 1, 16)


def test_variant_settings_follow_the_original_variants(cache_dir):
    """CLAP (hand): 1 VGA head, Linear heads, lr x batch/20, 30 % warm-up. CLAP+CoOp: D/64 heads, LayerNorm ->
    Linear heads, N(0, 0.02) context (12 tokens, or what micro-clip's 16-token context holds). CLAP+MaPLe: D/64
    heads, LayerNorm -> Linear, 2 tokens from 'a photo', unscaled lr, no warm-up, only the first-layer context
    trains unless --maple_train_all 1."""
    _, hand = make_model(cache_dir)
    assert (hand.vga_heads(), hand.heads[0].mu_norm, hand.lr_scale(), hand.warmup_fraction()) == (1, None, 1.6, 0.3)
    assert hand.vga.ffn[0].out_features == 2048
    _, coop = make_model(cache_dir, "--prompt", "coop")
    assert coop.vga_heads() == 128 // 64 and isinstance(coop.heads[0].mu_norm, torch.nn.LayerNorm)
    assert isinstance(coop.heads[0].sigma_norm, torch.nn.LayerNorm)
    assert coop.heads[0].mu_norm is not coop.heads[0].sigma_norm
    assert coop.prompt.n_ctx == 7 and abs(float(coop.prompt.ctx.detach().std()) - 0.02) < 0.005        # random, fits 16
    _, maple = make_model(cache_dir, "--prompt", "maple")
    assert (maple.vga_heads(), maple.lr_scale(), maple.warmup_fraction(), maple.prompt.n_ctx) == (2, 1.0, 0.0, 2)
    assert [n for n, p in maple.prompt.named_parameters() if p.requires_grad] == ["ctx"]
    _, fixed = make_model(cache_dir, "--prompt", "maple", "--maple_train_all", "--warmup", "0.3", "--vga_heads", "1")
    assert all(p.requires_grad for p in fixed.prompt.parameters()) and fixed.warmup_fraction() == 0.3
    assert fixed.vga_heads() == 1


def test_task_mask_blocks_attention_across_tasks():
    mask = task_block_mask([2, 1], "cpu")
    assert mask.tolist() == [[False, False, True], [False, False, True], [True, True, False]]


def test_template_statistics_and_language_init():
    feats, owner = torch.randn(7, 4), torch.tensor([0, 0, 0, 1, 1, 1, 1])
    mean, var = template_statistics(feats, owner, 2)
    assert torch.allclose(mean[1], feats[3:].mean(0)) and torch.allclose(var[0], feats[:3].var(0))
    head = VariationalHead(4)
    head.language_init(mean, var)
    assert torch.allclose(head.mu.weight, mean.T @ mean / 2) and torch.allclose(head.sigma.weight, var.T @ var / 2)
    # one template per class: no variance, sigma keeps a finite default init (the original got NaN)
    mean1, var1 = template_statistics(feats[:2], torch.tensor([0, 1]), 2)
    assert var1 is None
    head.sigma.reset_parameters()
    head.language_init(mean1, var1)
    assert torch.isfinite(head.sigma.weight).all()
    mu, sigma = head(torch.randn(3, 4))
    assert (sigma > 0.001 - 1e-7).all()


def test_gaussian_kl_matches_torch_distributions():
    mu, sigma = torch.randn(3, 5), torch.rand(3, 5) + 0.1
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu, sigma),
                                            torch.distributions.Normal(0.0, 1.0)).mean(0).sum()
    assert torch.allclose(gaussian_kl(mu, sigma), ref, atol=1e-5)


def test_warmup_cosine_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, 10, 0.3, final_factor=1e-3)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # CLAP4CLIP's linspace(0, lr, w + 2)[1:-1]: step 0 already moves, at lr / (w + 1)
    assert lrs[:4] == pytest.approx([1 / 4, 2 / 4, 3 / 4, 1.0])
    assert all(a > b for a, b in zip(lrs[3:], lrs[4:])) and lrs[-1] > 1e-3
    assert lrs[3 + 7 // 2] == pytest.approx(1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * 3 / 7)))


def test_sampled_logits_and_lasp_match_naive_references(cache_dir):
    dataset, model = make_model(cache_dir, "--forward_times", "4")
    train_steps(model, dataset, 0, steps=1)
    b, c, d = 3, 10, model.clip.embed_dim
    image, t, mu, sigma = F.normalize(torch.randn(b, d), dim=-1), torch.randn(b, c, d), torch.randn(b, c, d), \
        torch.rand(b, c, d)
    eps = torch.randn(4, c, d)
    s = model.logit_scale                                  # the weights' own (micro-clip: 27.1)
    assert s == pytest.approx(model.clip.model.logit_scale.exp().item())
    naive = s * torch.einsum("bd,tbcd->tbc", image, t + mu + sigma * eps[:, None])
    assert torch.allclose(model.sample_logits(image, t, mu, sigma, eps), naive, atol=1e-3)
    shared = model.sample_logits(image, t[0], mu[0], sigma[0], eps)
    assert torch.allclose(shared, s * torch.einsum("bd,tcd->tbc", image, t[0] + mu[0] + sigma[0] * eps), atol=1e-3)
    # LASP: the closed form equals the mean over samples and templates of <P[c, k], z_s[c']>
    texts, owner = model.prompts(range(c))
    P = F.normalize(model.encode_prompts(texts), dim=-1).view(c, -1, d)
    z = mu[0] + sigma[0] * eps                                         # (T, C, D)
    naive_sims = torch.einsum("ckd,tjd->tkcj", P, z).mean((0, 1))
    closed = model.template_mean[:c] @ (mu[0] + sigma[0] * eps.mean(0)).T
    assert torch.allclose(naive_sims, closed, atol=1e-4)


def test_per_image_context_makes_predictions_independent_of_the_batch(cache_dir):
    dataset, model = make_model(cache_dir)
    for task in range(2):
        train_steps(model, dataset, task, steps=3)
        model.meta_end_task(dataset)
    model.eval()
    x = torch.cat([dataset.task_data(k, "test").batches(4).__next__()["inputs"] for k in range(2)])
    together = model(x)
    alone = torch.cat([model(x[i:i + 1]) for i in range(len(x))])
    assert torch.allclose(together, alone, atol=1e-4)
    assert torch.equal(model(x), together)                           # fixed test-time noise: deterministic
    # with the original batch-wide context the same image scores differently in another batch
    model.opts.vga_context = "batch"
    assert not torch.allclose(model(x)[:1], model(x[:1]), atol=1e-3)


@pytest.mark.parametrize("finetune_epochs", [0, 2])
def test_old_heads_are_frozen_while_later_tasks_train(cache_dir, finetune_epochs):
    dataset, model = make_model(cache_dir, "--finetune_epochs", str(finetune_epochs))
    train_steps(model, dataset, 0, steps=3)
    model.meta_end_task(dataset)
    head0 = {k: v.clone() for k, v in model.heads[0].state_dict().items()}
    vga0 = {k: v.clone() for k, v in model.vga.state_dict().items()}
    for task in (1, 2):
        train_steps(model, dataset, task, steps=3)
        model.meta_end_task(dataset)
    same = all(torch.equal(head0[k], v) for k, v in model.heads[0].state_dict().items())
    assert not all(torch.equal(vga0[k], v) for k, v in model.vga.state_dict().items())   # training happened
    # main training never touches an old head; the class-balanced finetuning on the memory does (as CLAP)
    assert same == (finetune_epochs == 0)


def test_every_exemplar_selector_uses_per_image_samples(cache_dir):
    dataset, model = make_model(cache_dir, "--forward_times", "5")
    train_steps(model, dataset, 0, steps=3)
    x = dataset.task_data(0, "train").batches(8).__next__()["inputs"]
    out = model.selection_outputs(x)
    assert out["mc_logits"].shape == (5, 8, 10) and torch.allclose(out["mc_logits"].mean(0), out["logits"])
    assert out["mc_logits"].std(0).mean() > 0                          # the samples really differ
    for selector in SELECTORS:
        model.args.exemplar_selector = selector
        model.buffer = model.make_buffer()
        model.update_balanced_memory(dataset)
        assert len(model.buffer) == 100 and set(model.buffer.get_all()["labels"].tolist()) == set(range(10))


def test_er_appends_the_memory_to_the_tasks_data(cache_dir):
    """The original's ER: task 2's epoch is ceil((200 + 100) / 32) = 10 steps of 32 over the task's images and the
    memory's (re-read from the split, with every cached view); --replay batch is 7 steps of 32 stream + 16
    replayed items."""
    dataset, model = make_model(cache_dir, "--finetune_epochs", "0")
    train_steps(model, dataset, 0, steps=2)
    model.meta_end_task(dataset)
    task = dataset.task_data(1, "train")
    data = model.training_data(task)
    memory = model.buffer.get_all()
    assert (len(task), len(data), data.num_batches(32)) == (200, 300, 10)
    assert torch.equal(data.indexes[200:], memory["indexes"]) and torch.equal(data.labels[200:], memory["labels"])
    assert torch.equal(data.images[200:], dataset.split("train")[0][memory["indexes"]])
    assert torch.equal(data.images[200:, 0], memory["examples"])
    model.meta_begin_task(dataset, 10, 1)
    assert model.minibatch_size == 32                                   # no extra replay batch
    x, y = model.stream_and_replay(data.images[:32, 0], data.labels[:32])
    assert len(y) == 32
    _, batch_model = make_model(cache_dir, "--replay", "batch", "--finetune_epochs", "0")
    train_steps(batch_model, dataset, 0, steps=2)
    batch_model.meta_end_task(dataset)
    assert len(batch_model.training_data(task)) == 200
    batch_model.meta_begin_task(dataset, 7, 1)
    assert batch_model.minibatch_size == 16
    assert len(batch_model.stream_and_replay(task.images[:32, 0], task.labels[:32])[1]) == 48


def test_flip_views_are_exact_mirrors_drawn_half_the_time(cache_dir):
    """--feature_views 2 caches the image and its mirror (CLAP4CLIP's RandomHorizontalFlip); a training batch
    draws one of them per item."""
    dataset, model = make_model(cache_dir, "--feature_views", "2", "--synth_train_per_class", "4")
    data = dataset.task_data(0, "train")
    images = next(dataset.dataset.image_batches("train", 4, size=model.clip.image_size))
    with torch.no_grad():
        mirrored = model.clip.encode_image(model.clip.preprocess(images.flip(3))).float()
    assert torch.allclose(data.images[:4, 2], mirrored, atol=1e-4)
    assert torch.allclose(data.images[:, 1], data.images[:, 0])
    batch = next(data.batches(400, shuffle=True, generator=torch.Generator().manual_seed(0), train=True))
    flipped = (batch["inputs"] - batch["not_aug_inputs"]).abs().amax(1) > 1e-6
    assert 0.3 < flipped.float().mean() < 0.7


@pytest.mark.parametrize("rescore", [True, False])
def test_old_exemplars_are_rescored_when_the_memory_shrinks(cache_dir, rescore):
    """CLAP4CLIP re-selects each old class's exemplars among the stored ones with the current model (entropy
    here); without rescoring the prefix of the first ranking is kept."""
    dataset, model = make_model(cache_dir, "--exemplar_selector", "entropy", "--rescore_memory", str(int(rescore)))
    train_steps(model, dataset, 0, steps=2)
    model.meta_end_task(dataset)
    train_steps(model, dataset, 1, steps=3)
    old = model.memory_items()
    model.eval()
    with torch.no_grad():
        scores = torch.special.entr(model.selection_outputs(old["examples"])["logits"].softmax(-1)).sum(-1)
    model.train()
    model.update_balanced_memory(dataset)                               # quota 100 // 20 = 5 per class
    kept = model.buffer.get_all()
    for c in range(10):
        stored = old["indexes"][old["labels"] == c]
        expected = stored[scores[old["labels"] == c].argsort(descending=True, stable=True)[:5]] if rescore \
            else stored[:5]
        assert kept["indexes"][kept["labels"] == c].tolist() == expected.tolist()


def test_batch_context_sees_shuffled_single_task_test_batches(cache_dir):
    """--vga_context batch: test batches of --eval_batch_size (32, the original's) random images of one task."""
    dataset, model = make_model(cache_dir, "--vga_context", "batch")
    assert model.shuffled_eval_batches and model.args.eval_batch_size == 32
    seen = []
    model.forward = lambda x: (seen.append(x), torch.zeros(len(x), 100))[1]
    evaluate_step(model, dataset, {0: dataset.task_data(0, "test"), 1: dataset.task_data(1, "test")}, 1, [0, 1], 32)
    test = torch.cat([dataset.task_data(k, "test").images[:, 0] for k in (0, 1)])
    rows = [int((test == row).all(1).nonzero()[0]) for x in seen for row in x]
    assert sorted(rows) == list(range(200)) and rows != list(range(200))            # every image once, shuffled
    assert all(len({r // 100 for r in rows[i:i + 32]}) == 1 for i in range(0, 96, 32))   # one task per batch


def test_novelty_scores_include_the_monte_carlo_variance(cache_dir):
    dataset, model = make_model(cache_dir)
    for task in range(2):
        train_steps(model, dataset, task, steps=3)
        model.meta_end_task(dataset)
    test = {k: dataset.task_data(k, "test") for k in range(4)}
    result = evaluate_step(model, dataset, test, 1, [0, 1], calibration=True, novel_tasks=[2, 3], batch_size=64)
    assert set(result.novelty) >= {"energy", "max_softmax", "variance"}
    assert result.novelty["energy"]["auroc"] > 50                     # seen classes score higher than novel ones
    assert 0 <= result.calibration["ece"] <= 100


def test_checkpoint_restores_the_same_predictions(cache_dir):
    dataset, model = make_model(cache_dir)
    for task in range(2):
        train_steps(model, dataset, task, steps=3)
        model.meta_end_task(dataset)
    _, restored = make_model(cache_dir)
    restored.load_checkpoint_state(model.checkpoint_state())
    model.eval(), restored.eval()
    x = torch.cat([dataset.task_data(k, "test").batches(4).__next__()["inputs"] for k in range(2)])
    assert restored.trained_heads == 2 and torch.equal(model(x), restored(x))


@pytest.mark.parametrize("prompt", ["coop", "maple", "attriclip"])
def test_learned_prompts_train_with_clap(cache_dir, prompt):
    extra = {"attriclip": ["--attr_n_ctx", "2"], "maple": ["--maple_train_all", "1"]}.get(prompt, [])
    dataset, model = make_model(cache_dir, "--prompt", prompt, "--forward_times", "3", *extra)
    params = {n: p.clone() for n, p in model.prompt.named_parameters()}
    assert params
    for task in range(2):
        train_steps(model, dataset, task, steps=2)
        model.meta_end_task(dataset)
    moved = [n for n, p in model.prompt.named_parameters() if not torch.equal(params[n], p)]
    assert moved == list(params), set(params) - set(moved)          # every prompt parameter trains
    model.eval()
    x = dataset.task_data(0, "test").batches(4).__next__()["inputs"]
    logits = model(x)
    assert logits.shape == (4, 100) and torch.isfinite(logits[:, :20]).all() and (logits[:, 20:] < -1e3).all()


# ---- end to end ------------------------------------------------------------------------------------
# the README table's setting (seed 0 of its three)
E2E = ["--dataset", "seq-synth", "--seed", "0", "--quiet", "1", "--synth_train_per_class", "20",
       "--synth_test_per_class", "10"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache_dir):
    def run(name, *argv):
        tmp = tmp_path_factory.mktemp(name)
        out = run_main([*argv, *E2E, "--feature_cache", str(cache_dir), "--compute_ece", "1"], tmp, timeout=900)
        assert out.returncode == 0, out.stderr
        return load_results(only_run_dir(tmp / "results"))
    memory = ["--buffer_size", "500", "--n_epochs", "1"]
    return {"zeroshot": run("zs", "--model", "zeroshot-clip"),
            "adapter": run("ad", "--model", "clip-adapter", *memory),
            "clap": run("clap", "--model", "clap4clip", *memory),
            "deterministic": run("det", "--model", "clap4clip", "--variational", "0", *memory)}


def test_clap_adapts_to_new_classes_without_collapsing(runs):
    """After the last task, on that task's classes (class-IL over all 100), CLAP beats zero-shot and
    CLIP-Adapter by a wide margin. Over all seen classes it does NOT beat zero-shot on this world (see the
    README table: micro-clip's zero-shot is near the ceiling on old tasks and CLAP drifts a little on them);
    this checks it stays within a few points instead of collapsing."""
    newest = {k: r["accuracy_matrix"]["class_il"][-1][-1] for k, r in runs.items()}
    assert newest["clap"] > newest["zeroshot"] + 5 and newest["clap"] > newest["adapter"] + 5, newest
    last = {k: r["metrics"]["last_accuracy"] for k, r in runs.items()}
    assert last["clap"] > last["zeroshot"] - 5, last


def test_monte_carlo_heads_adapt_where_the_deterministic_variant_does_not(runs):
    """With the same recipe, the variational heads learn the newest task (the deterministic 'w/o VI' heads
    stay near zero-shot there). The paper's other claim, a lower ECE than 'w/o VI', does not hold on this
    world: both end near 15 % (README table), so it is reported, not asserted."""
    newest = {k: runs[k]["accuracy_matrix"]["class_il"][-1][-1] for k in ("clap", "deterministic")}
    assert newest["clap"] > newest["deterministic"] + 5, newest
