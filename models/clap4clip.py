"""CLAP4CLIP (Jha, Gong, Yao, NeurIPS 2024): probabilistic finetuning of CLIP's class features.

For the classes of task i, the class features t (from ``--prompt hand|coop|maple|attriclip``) are
corrected by visual-guided attention, t~ = t + VGA(t | images), and task i's own head gives a
distribution q_i = N(mu(t~), sigma(t~)^2). Logits are 100 * <image, t~ + z> for T = ``--forward_times``
samples z ~ q_i (not re-normalised, as the original), concatenated over tasks; training minimises
cross-entropy over all samples + ``--kl_weight`` KL(q_i || N(0, I)) + ``--beta`` LASP (the
cross-entropy of the similarities between each class's template-mean text features and the mean
samples of every class of the task); predictions average the T logits before the softmax.

The recipe of the paper's README (``--use-vga --expandable-adapter --lasp --beta 15 --variational
--finetuning --method er``):
- one head per task, created and language-initialised at the task's start (W_mu = T^T T / C from template
  means, W_sigma = V^T V / C from template variances over all classes seen so far); older heads frozen;
- an ER memory replayed during training, then ``--finetune_epochs`` of class-balanced finetuning on the
  memory alone at lr/10 (cosine, no warm-up) with every head trainable and the VGA frozen, where KL
  and LASP cover every task;
- SGD, effective lr = lr * batch_size / 20, linear warm-up over 30 % of the steps then cosine to lr/1000.
``--variational 0`` is the deterministic "w/o VI" variant (z = mu, no KL, one forward pass).

Differences from the original code, each a fix (see ``../shared/reference/clap4clip.md``):
- ``--vga_context image`` (default): the VGA sees only the image being classified. The original used
  the whole batch as context, and its test batches hold one task's images, which leaks the task
  identity; ``--vga_context batch`` keeps that behaviour for comparison (both are reported in the README).
- Evaluation is deterministic: the VGA is in eval mode (the original left its dropout on) and the
  Monte-Carlo noise at test time is fixed per class (seeded), so a prediction does not depend on the
  batch or on the evaluation order.
- The memory is replayed as an extra mini-batch whose size is proportional to memory / task size, so an
  epoch sees as many memory items as when the original appended the memory to the task's data.
- A single template per class has no variance: W_sigma then keeps its default init (the original: NaN).
- Monte-Carlo noise is shared by the images of a batch (per class and sample); with a batch-wide
  context this is what the original did, since its distributions were per class.
- With ``--prompt maple`` every MaPLe prompt layer trains (the original froze the deep prompts by name).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from models.utils.batch_scaled_lr import BatchScaledWarmupCosine
from models.utils.clap_modules import VariationalHead, VisualGuidedAttention, gaussian_kl, task_block_mask, \
    template_statistics
from models.utils.clip_model import ZERO_SHOT_SCALE, ClipModel
from models.utils.prompt_learners import CoopPrompts, HandCraftedPrompts, PromptLearner
from utils.options import option
from utils.schedulers import warmup_cosine

PROMPTS = ("hand", "coop", "maple", "attriclip")
#: logits given to classes without a head yet (they cannot be predicted)
UNSEEN_LOGIT = -1e4


@dataclass
class Clap4clipOptions:
    prompt: str = option("hand", "class features: hand-crafted template ensembles, or CoOp, MaPLe or AttriCLIP "
                         "prompts trained with the rest", choices=PROMPTS)
    variational: bool = option(True, "variational heads with Monte-Carlo sampling; 0 = the deterministic "
                               "'w/o VI' variant (z = mu)")
    forward_times: int = option(20, "Monte-Carlo samples T, at training and at test time", min=1)
    kl_weight: float = option(1e-3, "weight of KL(q || N(0, I))", min=0.0)
    lasp: bool = option(True, "language-aware past-task distribution regularisation")
    beta: float = option(15.0, "weight of the LASP term", min=0.0)
    use_vga: bool = option(True, "visual-guided attention on the class features")
    vga_context: str = option("image", "what the VGA attends to: the image itself, or every image of the "
                              "batch (the original; leaks the task through single-task test batches)",
                              choices=("image", "batch"))
    vga_heads: int = option(1, "attention heads of the VGA (CLAP: 1; CLAP4CLIP's CoOp variant: 8)", min=1)
    language_init: bool = option(True, "initialise each new head from template statistics")
    finetune_epochs: int = option(2, "epochs of class-balanced finetuning on the memory after each task "
                                  "but the first (0 = off)", min=0)
    warmup: float = option(0.3, "fraction of each task's steps with linear learning-rate warm-up", min=0.0,
                           max=1.0)
    n_ctx: int = option(4, "coop/maple: learnable context tokens (with --ctx_init, the phrase decides)", min=1)
    ctx_init: str = option("a photo of a", "coop/maple: phrase that initialises the context ('' = random)")
    prompt_depth: int = option(9, "maple: layers that receive prompts (clamped to the encoders' depth)", min=1)
    n_attributes: int = option(10, "attriclip: size of the attribute bank", min=1)
    attr_n_ctx: int = option(12, "attriclip: context tokens per attribute", min=1)
    attr_top_k: int = option(3, "attriclip: attributes chosen per image", min=1)
    matching_weight: float = option(0.7, "attriclip: weight of the key-matching loss", min=0.0)
    ortho_weight: float = option(0.3, "attriclip: weight of the attribute orthogonality loss", min=0.0)


class Clap4clip(BatchScaledWarmupCosine, ClipModel):
    NAME = "clap4clip"
    Options = Clap4clipOptions
    CAN_PREDICT_FUTURE = False          # a class gets its distribution from its task's head
    DEFAULTS = {"backbone": "micro-clip", "n_epochs": 5, "lr": 1e-3, "batch_size": 32, "optim_mom": 0.0,
                "buffer_mode": "balanced", "scheduler_mode": "iter"}

    @classmethod
    def image_encoder_frozen(cls, options) -> bool:
        return options is None or options.prompt != "maple"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o, dim = self.opts, self.clip.embed_dim
        self.prompt = self._make_prompt_learner().to(self.device)
        self.vga = VisualGuidedAttention(dim, o.vga_heads).to(self.device) if o.use_vga else None
        self.heads = nn.ModuleList(VariationalHead(dim, o.variational) for _ in range(self.n_tasks)).to(self.device)
        self.heads.requires_grad_(False)
        self.trained_heads = 0
        labels = list(range(self.n_classes))
        texts, owner = self.prompts(labels)
        feats = F.normalize(self.text_cache.get(texts, self.encode_prompts).to(self.device), dim=-1)
        mean, var = template_statistics(feats, torch.tensor(owner, device=self.device), self.n_classes)
        self.register_buffer("template_mean", mean, persistent=False)
        self.template_var = var
        samples = o.forward_times if o.variational else 1
        g = torch.Generator().manual_seed(self.args.seed + 2)
        self.register_buffer("eval_noise", torch.randn(samples, self.n_classes, dim, generator=g).to(self.device),
                             persistent=False)

    def _make_prompt_learner(self) -> PromptLearner:
        o, names = self.opts, self.dataset.class_names
        if o.prompt == "coop":
            return CoopPrompts(self.clip, names, o.n_ctx, o.ctx_init, seed=self.args.seed)
        if o.prompt == "maple":
            from models.utils.maple_prompts import MaplePrompts
            return MaplePrompts(self.clip, names, n_ctx=o.n_ctx, ctx_init=o.ctx_init, depth=o.prompt_depth,
                                seed=self.args.seed)
        if o.prompt == "attriclip":
            from models.utils.attriclip_prompts import AttriclipPrompts
            return AttriclipPrompts(self.clip, names, n_attributes=o.n_attributes, n_ctx=o.attr_n_ctx,
                                    top_k=o.attr_top_k, matching_weight=o.matching_weight,
                                    ortho_weight=o.ortho_weight, seed=self.args.seed)
        return HandCraftedPrompts(self.clip, names, self.zero_shot_weights())

    # ---- the probabilistic classifier ----------------------------------------------------------
    def task_sizes(self, n_tasks: int) -> list[int]:
        return [self.dataset.get_offsets(i)[1] - self.dataset.get_offsets(i)[0] for i in range(n_tasks)]

    def distributions(self, x: Tensor, n_tasks: int):
        """Image features (B, D), and per task (t~, mu, sigma) over its classes: (C_i, D) for a shared
        text and batch context, (B, C_i, D) when they depend on the image; plus the prompt's aux loss."""
        sizes = self.task_sizes(n_tasks)
        out = self.prompt(x, sum(sizes))
        text = out.text
        if self.vga is not None:
            mask = task_block_mask(sizes, self.device)
            text = text + self.vga(text, out.image, mask, self.opts.vga_context)
        parts, start = [], 0
        for i, size in enumerate(sizes):
            t = text[..., start:start + size, :]
            mu, sigma = self.heads[i](t)
            parts.append((t, mu, sigma))
            start += size
        return out.image, parts, out.aux_loss

    def sample_logits(self, image: Tensor, t: Tensor, mu: Tensor, sigma: Tensor | None, noise: Tensor) -> Tensor:
        """(T, B, C) logits 100 <image, t + mu + sigma * noise_s> without materialising (T, B, C, D)."""
        mean = t + mu
        base = image @ mean.T if mean.ndim == 2 else torch.einsum("bd,bcd->bc", image, mean)
        if sigma is None:
            return ZERO_SHOT_SCALE * base[None]
        if sigma.ndim == 2:
            spread = torch.einsum("bd,cd,tcd->tbc", image, sigma, noise)
        else:
            spread = torch.einsum("bcd,tcd->tbc", image[:, None] * sigma, noise)
        return ZERO_SHOT_SCALE * (base[None] + spread)

    def noise(self, start: int, size: int, dim: int, train: bool) -> Tensor:
        """(T, C_i, D) standard-normal noise for classes ``start .. start+size``: fresh when training,
        fixed per class at evaluation (deterministic predictions); zeros for the deterministic variant."""
        if not self.opts.variational:
            return torch.zeros(1, size, dim, device=self.device)
        if train:
            return torch.randn(self.opts.forward_times, size, dim, device=self.device)
        return self.eval_noise[:, start:start + size]

    def mc_logits(self, x: Tensor, n_tasks: int, train: bool = False):
        """(T, B, C_seen) Monte-Carlo logits, and what the regularisers need: per task (t~, mu, sigma),
        its noise, and the prompt's own loss."""
        image, parts, aux = self.distributions(x, n_tasks)
        logits, noises = self.sampled_logits(image, parts, train)
        return logits, parts, noises, aux

    def sampled_logits(self, image: Tensor, parts, train: bool) -> tuple[Tensor, list[Tensor]]:
        """(T, B, C_seen) logits of every task's classes, and the noise each task used."""
        logits, noises, start = [], [], 0
        for t, mu, sigma in parts:
            eps = self.noise(start, t.shape[-2], t.shape[-1], train)
            logits.append(self.sample_logits(image, t, mu, sigma, eps))
            noises.append(eps)
            start += t.shape[-2]
        return torch.cat(logits, -1), noises

    def padded(self, logits: Tensor) -> Tensor:
        return F.pad(logits, (0, self.n_classes - logits.shape[-1]), value=UNSEEN_LOGIT)

    def forward(self, x):
        logits = self.mc_logits(x, self.trained_heads)[0]
        return self.padded(logits.mean(0))

    def forward_samples(self, x):
        return self.padded(self.mc_logits(x, self.trained_heads)[0])

    @torch.no_grad()
    def selection_outputs(self, inputs):
        image, parts, _ = self.distributions(inputs, self.trained_heads)     # one encoder pass for both
        logits = self.sampled_logits(image, parts, train=False)[0]
        return {"features": image, "logits": logits.mean(0), "mc_logits": logits}

    # ---- training --------------------------------------------------------------------------------
    def regularisers(self, parts, noises, finetuning: bool) -> Tensor:
        """KL to N(0, I) and LASP for the current task (main training) or every task (finetuning)."""
        o, loss, start = self.opts, torch.zeros((), device=self.device), 0
        for i, ((t, mu, sigma), eps) in enumerate(zip(parts, noises)):
            size = t.shape[-2]
            if finetuning or i == len(parts) - 1:
                if sigma is not None and o.kl_weight > 0:
                    loss = loss + o.kl_weight * gaussian_kl(mu, sigma)
                if o.lasp and o.beta > 0:
                    # S[c, c'] = mean over samples and templates of <P[c, k], z_s[c']>; it is linear, so it is
                    # <template mean of c, mean sample of c'> (averaged over images for per-image features)
                    z = mu if sigma is None else mu + sigma * eps.mean(0)
                    z = z if z.ndim == 2 else z.mean(0)
                    sims = self.template_mean[start:start + size] @ z.T
                    loss = loss + o.beta * F.cross_entropy(sims, torch.arange(size, device=self.device))
            start += size
        return loss

    def clap_loss(self, x: Tensor, y: Tensor, finetuning: bool) -> Tensor:
        logits, parts, noises, aux = self.mc_logits(x, self.trained_heads, train=True)
        ce = F.cross_entropy(logits.flatten(0, 1), y.repeat(logits.shape[0]))
        loss = ce + self.regularisers(parts, noises, finetuning)
        return loss if aux is None else loss + aux

    def observe(self, inputs, labels, not_aug_inputs, epoch=None):
        self.optimizer.zero_grad()
        x, y = self.with_replay(inputs, labels)
        loss = self.clap_loss(x, y, finetuning=False)
        self.backward_and_step(loss)
        self.remember(examples=not_aug_inputs, labels=labels)
        return loss.item()

    def warmup_fraction(self) -> float:
        return self.opts.warmup

    def train_only_head(self, i: int) -> None:
        """What trains during task ``i``'s main training: its head, the VGA and the prompt."""
        self.heads.requires_grad_(False)
        self.heads[i].requires_grad_(True)
        if self.vga is not None:
            self.vga.requires_grad_(True)

    def begin_task(self, dataset):
        i = self.current_task
        self.train_only_head(i)
        if self.opts.language_init:
            seen = self.dataset.get_offsets(i)[1]
            var = None if self.template_var is None else self.template_var[:seen]
            self.heads[i].language_init(self.template_mean[:seen], var)
        self.trained_heads = i + 1
        if self.buffer is not None and self.args.minibatch_size is None:
            self.minibatch_size = self.replay_size(dataset)

    def replay_size(self, dataset) -> int:
        """Replay mini-batch size so that an epoch replays about as many items as the memory holds."""
        lo, hi = self.dataset.get_offsets(self.current_task)
        labels = dataset.split_labels("train")
        task_size = int(((labels >= lo) & (labels < hi)).sum())
        memory = len(self.buffer)
        return max(1, math.ceil(self.args.batch_size * memory / max(task_size, 1))) if memory else 1

    def end_task(self, dataset):
        if self.current_task > 0 and self.buffer is not None and self.opts.finetune_epochs > 0:
            self.finetune_on_memory()

    def finetune_on_memory(self) -> None:
        """Class-balanced finetuning: memory only, every head trainable, VGA frozen, lr/10, no warm-up."""
        items = self.memory_items()
        examples, labels = items["examples"], items["labels"]
        self.heads[:self.trained_heads].requires_grad_(True)
        if self.vga is not None:
            self.vga.requires_grad_(False).eval()
        params = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("net.")]
        a, bs = self.args, self.args.batch_size
        optimizer = torch.optim.SGD(params, lr=a.lr * self.lr_scale() / 10, momentum=a.optim_mom,
                                    weight_decay=a.optim_wd)
        steps = math.ceil(len(labels) / bs)
        scheduler = warmup_cosine(optimizer, steps * self.opts.finetune_epochs, 0.0)
        bar = tqdm(total=steps * self.opts.finetune_epochs, desc="finetune on memory", leave=False,
                   disable=a.quiet)
        for _ in range(self.opts.finetune_epochs):
            order = torch.randperm(len(labels), generator=self.generator).to(labels.device)
            for start in range(0, len(labels), bs):
                idx = order[start:start + bs]
                optimizer.zero_grad()
                loss = self.clap_loss(self.transform(examples[idx]), labels[idx], finetuning=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                bar.update()
        bar.close()
        self.heads.requires_grad_(False)
        if self.vga is not None:
            self.vga.requires_grad_(True).train(self.training)

    def checkpoint_state(self):
        return {**super().checkpoint_state(), "trained_heads": self.trained_heads}

    def load_checkpoint_state(self, state):
        self.trained_heads = int(state["trained_heads"])
        self.train_only_head(max(self.trained_heads - 1, 0))      # the parameters the saved optimizer had
        super().load_checkpoint_state(state)
