"""CGIL (Frascaroli et al., BMVC 2024): CLIP with generative latent replay.

CLIP stays frozen and nothing trains while a task streams (``observe`` does nothing; 0 epochs by default). At each
task's end, on the frozen image embeddings of the task's training images (the feature cache's, not normalised):

1. one generator per new class is fitted on its embeddings (``--cgil_generator vae|gauss|mog|real``,
   ``models/utils/cgil_generators.py``), all of the task's classes at once as one batched model;
2. class-specific prompts of every seen class are aligned on synthetic embeddings only: each epoch draws
   ``--cgil_samples_per_class`` (256) fresh samples per seen class from the kept generators, shuffled into batches
   of ``--batch_size_alignment`` (128); per batch the keys of all seen classes are re-encoded and trained with
   cross-entropy over the seen classes at the logit scale s (``--optim_alignment`` AdamW, lr
   ``--learning_rate_alignment``, weight decay ``--optim_alignment_wd`` 0, ``--num_epochs_alignment`` epochs, a
   fresh optimiser each task); the prompts are ``models/utils/cgil_prompts.py``'s (a learned token and a token
   generated from the class's zero-shot text embedding by a shared MLP);
3. the VAE encoders are dropped: only the decoders (and each class's normalisation statistics) are kept.

At test time it is a cosine classifier, s x cos(image, key) (s the weights' ``logit_scale.exp()``), over the seen
classes' prompted keys (computed once after each alignment). Classes not trained yet (``--eval_future 1``) are
scored with their zero-shot text embedding ``t_c`` of "a photo of a <name>": ``--cgil_future_keys raw`` (mammoth's
``future_forward``) leaves it unnormalised, so an untrained class's logit is ``s |t_c| cos`` against the trained
classes' ``s cos`` (micro-clip's |t_c| is about 17-21, so a future-task image is then classified among the untrained
classes only); ``normalized`` scores every class by its cosine. ``future_transfer`` (CGIL's metric,
``utils/metrics.py``) is recorded with ``--eval_future 1``.

``results.json``'s ``stats.cgil_memory`` gives the bytes kept per class (decoder weights and statistics, fp32)
and the rehearsal memory of the same bytes: images (uint8 RGB at the dataset's image size) and cached fp32
features per class.

The reference is mammoth's ``models/cgil.py`` with ``models/cgil_utils/{cgil_utils,vae,generative_replay}.py``
(HEAD e75a491); defaults are its argument defaults, ``--model_config best`` its per-dataset README commands.

Deviations from the reference:
- The backbone is whatever ``--backbone`` says (micro-clip by default; mammoth: ViT-L/14 in fp32).
- A task's VAEs are fitted together as one batched model (same per-class computation: Adam state, step count,
  shuffling, noise and skipped one-item batches per class; tested against class-by-class fits); the randomness is
  seeded per class and run (mammoth: the global RNG, one class after the other), so runs are identical for the
  same packages but not draw-for-draw mammoth's.
- Image embeddings come from the feature cache (view 0: CLIP's test preprocessing, as mammoth's clip preprocess
  for its train loader); class names have underscores replaced by spaces, as the other prompt learners here.
- A constant feature dimension (max = min) or a zero std divides by 1 in the VAE's normalisation (mammoth divides by
  zero and trains on NaN).
- ``mog``: the mixture density is the exact diagonal Gaussian; mammoth's vendored gmm-torch weighs the squared
  distance by ``rsqrt(var)`` (1/sigma instead of 1/sigma^2) and adds half the log-determinant
  (``--gr_mog_density anchor`` restores it); k-means starts from seeded random centres; EM stops when the mean
  log-likelihood gains less than 1e-3 keeping the last parameters (gmm-torch's "revert" reassigns the same
  parameter objects, so it keeps them too). Not used by the paper's runs.
- ``--eval_future``: Tusk's class-IL on a future task k takes the argmax over the classes of tasks 0..k
  (mammoth's ``future_forward``: over all classes), the same for every method here.
- Not implemented: mammoth's ``diffusion`` generator and the disabled prompt variants (``--general_context``,
  ``--generated_context``, ``--cocoop``, ``--align_with_ortholoss``, ``--train_only_current_prompts``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from models.utils.cgil_generators import (GENERATORS, KINDS, REPARAM, GaussianGenerators, MixtureGenerators,
                                          RealFeatures, VaeConfig, VaeDecoders, fit_vaes)
from models.utils.cgil_prompts import MLP_BN, CgilPrompts
from models.utils.clip_model import ClipModel
from utils.options import option
from utils.optimizers import OPTIMIZERS, make_optimizer
from utils.precision import autocast


@dataclass
class CgilOptions:
    cgil_generator: str = option("vae", "class-conditional generator of image embeddings (mammoth's --g_models; 'real': the "
                                 "real embeddings, feature rehearsal, an upper bound that is not CGIL)",
                                 choices=GENERATORS)
    gr_vae_hidden_dim: int = option(512, "VAE hidden width", min=1)
    gr_vae_latent_dim: int = option(256, "VAE latent size", min=1)
    gr_vae_n_iters: int = option(500, "VAE training epochs over each class's embeddings", min=1)
    lr_vae: float = option(2e-4, "VAE Adam learning rate", min=0.0)
    gr_vae_reparam: str = option("anchor", "VAE reparameterisation: 'anchor' = mu + eps * exp(logvar) (mammoth's, "
                                 "exp(logvar) used as the std), 'standard' = mu + eps * exp(logvar / 2)",
                                 choices=REPARAM)
    gr_mog_n_components: int = option(5, "mixture components per class (--cgil_generator mog)", min=1)
    gr_mog_n_iters: int = option(500, "EM iterations at most (--cgil_generator mog)", min=1)
    gr_mog_density: str = option("exact", "mixture log-density: 'exact', or 'anchor' = mammoth's gmm-torch (1/sigma "
                                 "instead of 1/sigma^2)", choices=("exact", "anchor"))
    cgil_samples_per_class: int = option(256, "synthetic embeddings drawn per seen class at every alignment epoch",
                                         min=1)
    learning_rate_alignment: float = option(0.05, "learning rate of the prompt alignment", min=0.0)
    optim_alignment: str = option("adamw", "optimiser of the prompt alignment", choices=OPTIMIZERS)
    optim_alignment_wd: float = option(0.0, "weight decay of the prompt alignment", min=0.0)
    num_epochs_alignment: int = option(30, "alignment epochs per task (mammoth's paper runs: 60; EuroSAT, ISIC: 150)",
                                       min=0)
    batch_size_alignment: int = option(128, "batch size of the prompt alignment", min=1)
    n_context: int = option(1, "learned tokens per class (before the generated one)", min=1)
    cgil_mlp_bn: str = option("fixed", "BatchNorm of the token-generator MLP: 'fixed' = mammoth's (eval mode, "
                              "statistics 0 and 1: a learnable affine), 'batch' = statistics of the classes encoded "
                              "together", choices=MLP_BN)
    cgil_future_keys: str = option("raw", "keys of classes not trained yet (--eval_future): 'raw' = their zero-shot "
                                   "text embedding unnormalised (mammoth's future_forward), 'normalized'",
                                   choices=("raw", "normalized"))


class Cgil(ClipModel):
    NAME = "cgil"
    Options = CgilOptions
    SUPPORTS_BUFFER = False
    DEFAULTS = {"backbone": "micro-clip", "n_epochs": 0}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        sizes = [self.dataset.get_offsets(t)[1] - self.dataset.get_offsets(t)[0] for t in range(self.n_tasks)]
        self.prompt = CgilPrompts(self.clip, self.dataset.class_names, sizes, self.opts.n_context,
                                  self.opts.cgil_mlp_bn, seed=self.args.seed).to(self.device)
        self.generators = nn.ModuleList()
        self._keys: torch.Tensor | None = None
        self.fit_seconds: list[float] = []

    # ---- the loop's hooks: nothing trains while a task streams -------------------------------------------------
    def get_parameters(self):
        return []

    def observe(self, inputs, labels, not_aug_inputs, epoch=None):
        return 0.0

    @property
    def n_trained(self) -> int:
        return sum(g.n_classes for g in self.generators)

    def keys(self) -> torch.Tensor:
        """(C, D): the trained keys of the aligned classes, then the zero-shot keys of the others."""
        if self._keys is None:
            n = self.n_trained
            with torch.no_grad():
                trained = self.prompt.keys(n) if n else self.prompt.text_raw[:0]
            future = self.prompt.text_raw[n:]
            if self.opts.cgil_future_keys == "normalized":
                future = F.normalize(future, dim=-1)
            self._keys = torch.cat([trained, future])
        return self._keys

    def forward(self, x):
        return self.logit_scale * F.normalize(self.image_features(x), dim=-1) @ self.keys().T

    # ---- end of task: fit, align, keep the decoders ------------------------------------------------------------
    def end_task(self, dataset):
        feats, labels = self.task_embeddings(dataset)
        lo, hi = self.dataset.get_offsets(self.current_task)
        per_class = [feats[labels == c] for c in range(lo, hi)]
        t0 = time.perf_counter()
        self.generators.append(self.fit_generators(per_class, list(range(lo, hi))).to(self.device))
        self.fit_seconds.append(time.perf_counter() - t0)
        self.align(hi)
        self._keys = None

    @torch.no_grad()
    def task_embeddings(self, dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen image embeddings (not normalised) of the task's training images, un-augmented: cached features
        pass through, images (``--feature_cache off``) go through the encoder."""
        feats, labels = [], []
        for batch in dataset.task_data(self.current_task, "train").batches(self.args.eval_batch_size):
            with autocast(self.precision, self.device):
                feats.append(self.image_features(batch["inputs"].to(self.device)).float())
            labels.append(batch["labels"].to(self.device))
        return torch.cat(feats), torch.cat(labels)

    def fit_generators(self, per_class, labels):
        o = self.opts
        if o.cgil_generator == "gauss":
            return GaussianGenerators.fit(per_class)
        if o.cgil_generator == "real":
            return RealFeatures.fit(per_class)
        if o.cgil_generator == "mog":
            return MixtureGenerators.fit(per_class, labels, o.gr_mog_n_components, o.gr_mog_n_iters, self.args.seed,
                                         o.gr_mog_density)
        cfg = VaeConfig(o.gr_vae_hidden_dim, o.gr_vae_latent_dim, o.gr_vae_n_iters, o.lr_vae, o.gr_vae_reparam)
        bar = tqdm(total=cfg.epochs, desc=f"fit {len(labels)} VAEs", leave=False, disable=self.args.quiet)
        kept = fit_vaes(per_class, labels, cfg, self.args.seed, self.device, progress=bar.update)
        bar.close()
        return VaeDecoders(kept)

    def synthetic_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``cgil_samples_per_class`` fresh samples of every kept class, and their labels."""
        n = self.opts.cgil_samples_per_class
        feats, labels, start = [], [], 0
        for g in self.generators:
            feats.append(g.sample(n, self.generator).flatten(0, 1))
            labels.append(torch.arange(start, start + g.n_classes).repeat_interleave(n))
            start += g.n_classes
        return torch.cat(feats), torch.cat(labels).to(self.device)

    def alignment_optimizer(self, params):
        o = self.opts
        return make_optimizer(o.optim_alignment, params, o.learning_rate_alignment, weight_decay=o.optim_alignment_wd)

    def align(self, n_seen: int) -> None:
        """Train the prompts of every seen class and the token generator on synthetic embeddings only."""
        o = self.opts
        params = [self.prompt.prompts[t] for t in range(self.current_task + 1)] + \
            list(self.prompt.generator.parameters())
        optimizer = self.alignment_optimizer(params)
        bs = o.batch_size_alignment
        steps = -(-n_seen * o.cgil_samples_per_class // bs)
        bar = tqdm(total=o.num_epochs_alignment * steps, desc="align prompts", leave=False, disable=self.args.quiet)
        with torch.enable_grad():
            for _ in range(o.num_epochs_alignment):
                feats, labels = self.synthetic_features()
                order = torch.randperm(labels.shape[0], generator=self.generator).to(self.device)
                for start in range(0, labels.shape[0], bs):
                    idx = order[start:start + bs]
                    optimizer.zero_grad()
                    logits = self.logit_scale * F.normalize(feats[idx], dim=-1) @ self.prompt.keys(n_seen).T
                    loss = F.cross_entropy(logits, labels[idx])
                    loss.backward()
                    optimizer.step()
                    bar.update()
        bar.close()

    # ---- checkpoints and accounting ----------------------------------------------------------------------------
    def checkpoint_state(self):
        return {**super().checkpoint_state(), "cgil_fit_seconds": list(self.fit_seconds)}

    def load_checkpoint_state(self, state) -> None:
        self.fit_seconds = list(state.get("cgil_fit_seconds", []))
        done = int(state["current_task"])
        kind = KINDS[self.opts.cgil_generator]
        kept = []
        for t in range(done):                   # each task's generator, shaped as the checkpoint holds it
            prefix = f"generators.{t}."
            kept.append(kind({k[len(prefix):]: torch.zeros_like(v) for k, v in state["model"].items()
                              if k.startswith(prefix)}))
        self.generators = nn.ModuleList(kept).to(self.device)
        super().load_checkpoint_state(state)
        self._keys = None

    def memory_accounting(self) -> dict:
        """Bytes kept per class by the generators, and a rehearsal memory of the same bytes."""
        if not len(self.generators):
            return {}
        per_class = self.generators[0].bytes_per_class()
        dim = self.prompt.text_raw.shape[1]
        image_bytes = 3 * int(self.dataset.IMAGE_SIZE) ** 2
        n = self.n_trained
        return {"generator": self.opts.cgil_generator, "classes": n, "bytes_per_class": per_class,
                "total_bytes": per_class * n,
                "kept": "decoder weights and normalisation statistics (vae), the distribution's parameters, or (real) "
                        "the embeddings themselves; fp32",
                "equal_rehearsal": {
                    "image_bytes": image_bytes, "image": f"uint8 RGB {self.dataset.IMAGE_SIZE}x{self.dataset.IMAGE_SIZE}",
                    "images_per_class": per_class / image_bytes, "total_images": per_class * n / image_bytes,
                    "feature_bytes": 4 * dim, "features_per_class": per_class / (4 * dim)},
                "generator_fit_seconds": self.fit_seconds}

    def run_stats(self) -> dict:
        return {**super().run_stats(), "cgil_memory": self.memory_accounting()}
