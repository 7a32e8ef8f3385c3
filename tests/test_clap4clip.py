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
    assert (run.buffer_size, run.batch_size, run.n_epochs, run.lr, run.class_order) == (2000, 32, 5, 0.001, "seed1993")
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
    assert torch.allclose(vga._single_key_attention(images)[:, None].expand_as(full), full, atol=1e-5)
    # the original batch context does depend on the other images
    batch = vga(text, images, mask, "batch")
    assert batch.shape == (6, 16) and not torch.allclose(batch, vga(text, images[:2], mask, "batch"), atol=1e-3)


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
    assert lrs[:4] == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    assert all(a > b for a, b in zip(lrs[3:], lrs[4:])) and lrs[-1] > 1e-3
    assert lrs[3 + 7 // 2] == pytest.approx(1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * 3 / 7)))


def test_sampled_logits_and_lasp_match_naive_references(cache_dir):
    dataset, model = make_model(cache_dir, "--forward_times", "4")
    train_steps(model, dataset, 0, steps=1)
    b, c, d = 3, 10, model.clip.embed_dim
    image, t, mu, sigma = F.normalize(torch.randn(b, d), dim=-1), torch.randn(b, c, d), torch.randn(b, c, d), \
        torch.rand(b, c, d)
    eps = torch.randn(4, c, d)
    naive = 100 * torch.einsum("bd,tbcd->tbc", image, t + mu + sigma * eps[:, None])
    assert torch.allclose(model.sample_logits(image, t, mu, sigma, eps), naive, atol=1e-3)
    shared = model.sample_logits(image, t[0], mu[0], sigma[0], eps)
    assert torch.allclose(shared, 100 * torch.einsum("bd,tcd->tbc", image, t[0] + mu[0] + sigma[0] * eps), atol=1e-3)
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
    extra = ["--attr_n_ctx", "2"] if prompt == "attriclip" else []
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
