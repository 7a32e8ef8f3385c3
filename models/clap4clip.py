"""CLAP4CLIP (Jha, Gong, Yao, NeurIPS 2024): probabilistic finetuning of CLIP's class features.

For the classes of task i, the class features t (from ``--prompt hand|coop|maple|attriclip``) are
corrected by visual-guided attention, t~ = t + VGA(t | images), and task i's own head gives a
distribution q_i = N(mu(t~), sigma(t~)^2). Logits are s * <image, t~ + z> (s: CLIP's logit scale) for
T = ``--forward_times`` samples z ~ q_i (not re-normalised, as the original), concatenated over tasks; training
minimises cross-entropy over all samples + ``--kl_weight`` KL(q_i || N(0, I)) + ``--beta`` LASP (the cross-entropy
of the similarities between each class's template-mean text features and the mean samples of every class of the
task); predictions average the T logits before the softmax.

The recipe of the paper's README (``--use-vga --expandable-adapter --lasp --beta 15 --variational
--finetuning --method er``), as its code runs it (``classifier/continual_clip_variational.py`` and, for
``--prompt coop|maple``, ``coop_variational.py``/``maple_variational.py``):
- the VGA is one ``nn.TransformerDecoderLayer`` (GELU, dropout 0.1, feed-forward 2048 whatever D: ``--vga_ffn``)
  with 1 head for hand-crafted prompts and D/64 for CoOp/MaPLe (``--vga_heads``); it is in eval mode (no
  dropout) at test time and during selection and finetuning, in train mode during main training;
- one head per task, created and language-initialised at the task's start (W_mu = T^T T / C from template
  means, W_sigma = V^T V / C from template variances over all classes seen so far); older heads frozen; a head
  is a Linear (hand) or LayerNorm -> Linear (CoOp/MaPLe; ``--head_norm``) for mu and for sigma;
- ER: the memory's items appended to the task's data (``--replay append``), then ``--finetune_epochs`` of
  class-balanced finetuning on the memory alone at lr/10 (cosine, no warm-up) with every head trainable and the
  VGA frozen, where KL and LASP cover every task; memory selection re-scores the old classes' stored exemplars
  with the current model (herding on the L2-normalised mean logits, entropy of their softmax);
- SGD, effective lr = lr * batch_size / 20, linear warm-up over 30 % of the steps (step s at lr (s+1)/(w+1)),
  then cosine to lr/1000; CLAP+MaPLe: unscaled lr, no warm-up, 2 context tokens from "a photo of a", and only
  the first-layer text context trains (the original's name filter); CLAP+CoOp: 12 N(0, 0.02) context tokens;
- test batches of 32 (``eval_batch_size``), and training augmentation = horizontal flips, served as cached
  feature views with ``--feature_views 2`` (``--augmentation flip``).
``--variational 0`` is the deterministic "w/o VI" variant (z = mu, no KL, one forward pass).

Deviations from the reference:
- ``--vga_context image`` (default): the VGA sees only the image being classified. The original used the whole
  batch as context, and its test batches hold 32 shuffled images of one task, which leaks the task identity;
  ``--vga_context batch`` restores it (test batches then shuffled once per task, of ``--eval_batch_size``).
- Monte-Carlo noise at test time is fixed per class (seeded), so evaluation is deterministic; the original drew
  fresh samples at every test batch. Noise is shared by the images of a batch (per class and sample), as the
  original's per-class distributions were.
- A single template per class has no variance: W_sigma then keeps its default init (the original: NaN).
- Flips need ``--feature_views 2`` (the default 0 caches the unflipped image only, the earlier behaviour);
  exemplar selection scores the unflipped images (the original's selection loader used the training transform,
  random flips included).
- micro-clip's 16-token context cannot hold CLAP+CoOp's 12 tokens: the default becomes the most that fit (7 on
  seq-synth); ``--n_ctx`` sets it.
- With ``--vga_context image`` each (image, class) pair is its own one-key attention: dropout drops that key's
  weight per (image, class, head), as ``nn.MultiheadAttention`` would.
- Fixes behind flags: ``--maple_train_all 1`` trains every MaPLe prompt layer (the original froze all but the
  first-layer context by accident); ``--replay batch`` replays a batch of batch x memory / task items per
  stream batch instead of appending (Tusk's earlier default); ``--vga_ffn 512`` and ``--vga_heads`` restore the
  earlier 4 x D width on micro-clip; ``--rescore_memory 0`` keeps the old exemplars' first ranking.
- fp32 (``--precision``) where the original trains fp16 weights with plain SGD; the class order is the
  dataset's unless ``--class_order seed1993_run`` (the original's np.random.seed(1993 + run), run = ``--seed``;
  the ``best`` config).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.utils.batch_scaled_lr import BatchScaledWarmupCosine
from models.utils.clap_modules import ORIGINAL_FFN, VariationalHead, VisualGuidedAttention, gaussian_kl, \
    task_block_mask, template_statistics
from models.utils.clip_model import ClipModel
from models.utils.memory_replay import REPLAY_MODES, MemoryReplay
from models.utils.prompt_learners import CoopPrompts, HandCraftedPrompts, PromptLearner
from utils.augment import HorizontalFlipViews
from utils.options import option

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
                              "batch (the original; leaks the task through single-task test batches, which are "
                              "then shuffled once per task, as the original's, and --eval_batch_size matters)",
                              choices=("image", "batch"))
    vga_heads: int = option(0, "attention heads of the VGA; 0 = the original's: 1 with --prompt hand|attriclip, "
                            "D/64 with coop|maple (8 on ViT-B/16)", min=0)
    vga_ffn: int = option(ORIGINAL_FFN, "feed-forward width of the VGA (the original keeps "
                          "nn.TransformerDecoderLayer's 2048 for every backbone; 4 x D before the fidelity pass, e.g. "
                          "512 for micro-clip)", min=1)
    head_norm: Optional[bool] = option(None, "a LayerNorm in front of each head's Linear; default: as the original "
                                       "variant (on with --prompt coop|maple, off with hand|attriclip)")
    language_init: bool = option(True, "initialise each new head from template statistics")
    finetune_epochs: int = option(2, "epochs of class-balanced finetuning on the memory after each task "
                                  "but the first (0 = off)", min=0)
    replay: str = option("append", "how the memory joins main training: 'append' = its items appended to the "
                         "task's data (the original's ER), 'batch' = a replay batch of batch x memory / task items "
                         "after every stream batch", choices=REPLAY_MODES)
    warmup: Optional[float] = option(None, "fraction of each task's steps with linear learning-rate warm-up "
                                     "(step s at lr (s + 1) / (w + 1)); default: the original's 0.3, 0 with "
                                     "--prompt maple", min=0.0, max=1.0)
    lr_batch_scale: Optional[bool] = option(None, "effective lr = lr x batch_size / 20; default: on, off with "
                                            "--prompt maple (as the original variants)")
    augmentation: str = option("flip", "what --feature_views caches: horizontal flips (the original's only "
                               "augmentation; use an even --feature_views) or the dataset's augmentation",
                               choices=("flip", "dataset"))
    n_ctx: Optional[int] = option(None, "coop/maple: learnable context tokens; default: the original's 12 (coop) "
                                  "and 2 (maple)", min=1)
    ctx_init: Optional[str] = option(None, "coop/maple: phrase that initialises the context ('' = N(0, 0.02)); "
                                     "default: the original's '' (coop) and 'a photo of a' (maple)")
    prompt_depth: int = option(9, "maple: layers that receive prompts (clamped to the encoders' depth)", min=1)
    maple_train_all: bool = option(False, "maple: train every prompt layer (first-layer projection, deep prompts "
                                   "and couplings); the original's optimizer name filter trained the first-layer "
                                   "text context only, the rest staying at its random init")
    n_attributes: int = option(10, "attriclip: size of the attribute bank", min=1)
    attr_n_ctx: int = option(12, "attriclip: context tokens per attribute", min=1)
    attr_top_k: int = option(3, "attriclip: attributes chosen per image", min=1)
    matching_weight: float = option(0.7, "attriclip: weight of the key-matching loss", min=0.0)
    ortho_weight: float = option(0.3, "attriclip: weight of the attribute orthogonality loss", min=0.0)


#: What the original's variants fix in code (``continual_clip_variational.py`` for the hand-crafted prompts,
#: ``coop_variational.py``, ``maple_variational.py``); an option left unset takes its variant's value.
#: ``vga_heads`` 0 means D/64 (``nhead=ctx_dim // 64``). CLAP+AttriCLIP was released as bytecode only: as hand.
VARIANTS = {
    "hand": {"vga_heads": 1, "head_norm": False, "warmup": 0.3, "lr_batch_scale": True},
    "coop": {"vga_heads": 0, "head_norm": True, "warmup": 0.3, "lr_batch_scale": True, "n_ctx": 12, "ctx_init": ""},
    "maple": {"vga_heads": 0, "head_norm": True, "warmup": 0.0, "lr_batch_scale": False, "n_ctx": 2,
              "ctx_init": "a photo of a"},
}
VARIANTS["attriclip"] = VARIANTS["hand"]


class Clap4clip(MemoryReplay, BatchScaledWarmupCosine, ClipModel):
    NAME = "clap4clip"
    Options = Clap4clipOptions
    CAN_PREDICT_FUTURE = False          # a class gets its distribution from its task's head
    HERDING_ON = "logits"               # CLAP4CLIP's icarl selector herds the mean logits
    RESCORES_MEMORY = True
    DEFAULTS = {"backbone": "micro-clip", "n_epochs": 5, "lr": 1e-3, "batch_size": 32, "eval_batch_size": 32,
                "optim_mom": 0.0, "buffer_mode": "balanced", "scheduler_mode": "iter"}

    @classmethod
    def image_encoder_frozen(cls, options) -> bool:
        return options is None or options.prompt != "maple"

    @classmethod
    def view_augmentation(cls, dataset, options):
        return HorizontalFlipViews() if options is None or options.augmentation == "flip" else None

    def setting(self, name: str):
        """Option ``name``, or its value in the original variant of ``--prompt`` when it is unset."""
        value = getattr(self.opts, name)
        return VARIANTS[self.opts.prompt].get(name) if value is None else value

    def vga_heads(self) -> int:
        heads = self.opts.vga_heads or VARIANTS[self.opts.prompt]["vga_heads"]
        return heads or max(1, self.clip.embed_dim // 64)

    @property
    def shuffled_eval_batches(self) -> bool:
        """A batch-wide VGA context makes predictions depend on the batch: test batches are shuffled per task."""
        return self.opts.use_vga and self.opts.vga_context == "batch"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.check_replay()
        o, dim = self.opts, self.clip.embed_dim
        self.prompt = self._make_prompt_learner().to(self.device)
        if o.prompt == "maple" and not o.maple_train_all:       # the original's name filter: only 'ctx' trains
            for name, param in self.prompt.named_parameters():
                param.requires_grad_(name == "ctx")
        self.vga = VisualGuidedAttention(dim, self.vga_heads(), o.vga_ffn).to(self.device) if o.use_vga else None
        norm = bool(self.setting("head_norm"))
        self.heads = nn.ModuleList(VariationalHead(dim, o.variational, norm)
                                   for _ in range(self.n_tasks)).to(self.device)
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
            n_ctx = self.setting("n_ctx") if o.n_ctx is not None else self.fitting_context(names, self.setting("n_ctx"))
            return CoopPrompts(self.clip, names, n_ctx, self.setting("ctx_init"), seed=self.args.seed)
        if o.prompt == "maple":
            from models.utils.maple_prompts import MaplePrompts
            return MaplePrompts(self.clip, names, n_ctx=self.setting("n_ctx"), ctx_init=self.setting("ctx_init"),
                                depth=o.prompt_depth, seed=self.args.seed)
        if o.prompt == "attriclip":
            from models.utils.attriclip_prompts import AttriclipPrompts
            return AttriclipPrompts(self.clip, names, n_attributes=o.n_attributes, n_ctx=o.attr_n_ctx,
                                    top_k=o.attr_top_k, matching_weight=o.matching_weight,
                                    ortho_weight=o.ortho_weight, seed=self.args.seed)
        return HandCraftedPrompts(self.clip, names, self.zero_shot_weights())

    def fitting_context(self, names: list[str], wanted: int) -> int:
        """``wanted`` context tokens, or as many as the text encoder's context holds in front of the longest
        '<name>.' (micro-clip's 16 tokens cannot hold the original's 12)."""
        tokens = self.clip.tokenize([f"{n.replace('_', ' ')}." for n in names])
        longest = int((tokens != 0).sum(1).max())              # SOS + name + '.' + EOS
        return max(1, min(wanted, tokens.shape[1] - 1 - longest))        # check_fits_context keeps the last free

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
        """(T, B, C) logits s <image, t + mu + sigma * noise_s> without materialising (T, B, C, D)."""
        mean = t + mu
        base = image @ mean.T if mean.ndim == 2 else torch.einsum("bd,bcd->bc", image, mean)
        if sigma is None:
            return self.logit_scale * base[None]
        if sigma.ndim == 2:
            spread = torch.einsum("bd,cd,tcd->tbc", image, sigma, noise)
        else:
            spread = torch.einsum("bcd,tcd->tbc", image[:, None] * sigma, noise)
        return self.logit_scale * (base[None] + spread)

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
        x, y = self.stream_and_replay(inputs, labels)
        loss = self.clap_loss(x, y, finetuning=False)
        self.backward_and_step(loss)
        self.remember(examples=not_aug_inputs, labels=labels)
        return loss.item()

    def warmup_fraction(self) -> float:
        return float(self.setting("warmup"))

    def lr_scale(self) -> float:
        return super().lr_scale() if self.setting("lr_batch_scale") else 1.0

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
        if self.buffer is not None and not self.appends_memory() and self.args.minibatch_size is None:
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
            self.class_balanced_finetuning()

    def class_balanced_finetuning(self) -> None:
        """Memory only, every head trainable, VGA frozen, lr/10, cosine without warm-up."""
        self.heads[:self.trained_heads].requires_grad_(True)
        if self.vga is not None:
            self.vga.requires_grad_(False).eval()
        params = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("net.")]
        self.finetune_on_memory(params, self.args.lr * self.lr_scale() / 10, self.opts.finetune_epochs,
                                lambda x, y: self.clap_loss(x, y, finetuning=True))
        self.heads.requires_grad_(False)
        if self.vga is not None:
            self.vga.requires_grad_(True).train(self.training)

    def checkpoint_state(self):
        return {**super().checkpoint_state(), "trained_heads": self.trained_heads}

    def load_checkpoint_state(self, state):
        self.trained_heads = int(state["trained_heads"])
        self.train_only_head(max(self.trained_heads - 1, 0))      # the parameters the saved optimizer had
        super().load_checkpoint_state(state)
