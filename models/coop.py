"""CoOp (Zhou et al., 2022): learnable context tokens in front of each class name.

Prompts are ``[SOS] v_1 ... v_M <class name>. [EOS]`` through CLIP's frozen text encoder; only the
context vectors train (shared by all classes, or one set per class with ``--class_specific 1``),
initialised from a phrase (``--ctx_init``, default "a photo of a") or N(0, 0.02). Cross-entropy over
every class seen so far, with optional ER replay; the learned context also scores class names of
tasks not seen yet, so ``--eval_future`` works.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.utils.clip_model import ZERO_SHOT_SCALE, ClipModel
from utils.errors import UserError
from utils.options import option


@dataclass
class CoopOptions:
    n_ctx: int = option(4, "learnable context tokens (with --ctx_init, the phrase's length is used)", min=1)
    ctx_init: str = option("a photo of a", "phrase whose token embeddings initialise the context ('' = random)")
    class_specific: bool = option(False, "one context per class (CoOp's CSC) instead of one shared context")


class Coop(ClipModel):
    NAME = "coop"
    Options = CoopOptions
    DEFAULTS = {"backbone": "micro-clip", "n_epochs": 5, "lr": 0.01, "optim_mom": 0.9, "lr_scheduler": "cosine"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        clip, opts = self.clip, self.opts
        with torch.no_grad():
            if opts.ctx_init.strip():
                phrase = clip.tokenize([opts.ctx_init.strip()])[0]
                n_ctx = int(phrase.argmax()) - 1                    # tokens between SOS and EOS
                init = clip.token_embeddings(phrase[None])[0, 1:1 + n_ctx]
            else:
                n_ctx = opts.n_ctx
                width = clip.model.token_embedding.embedding_dim
                init = torch.randn(n_ctx, width, generator=torch.Generator().manual_seed(self.args.seed)) * 0.02
            placeholder = " ".join(["X"] * n_ctx)
            names = [name.replace("_", " ") for name in self.dataset.class_names]
            tokens = clip.tokenize([f"{placeholder} {name}." for name in names])
            if bool((tokens[:, -1] != 0).any()):
                raise UserError(f"coop: a prompt is longer than the text encoder's context ({tokens.shape[1]} tokens)")
        self.n_ctx = n_ctx
        shape = (self.n_classes, n_ctx, init.shape[-1]) if opts.class_specific else (n_ctx, init.shape[-1])
        self.ctx = nn.Parameter(init.float().to(self.device).expand(shape).clone())
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("token_embeds", clip.token_embeddings(tokens).detach().float(), persistent=False)
        self._eval_text = None

    def text_features(self, labels: torch.Tensor) -> torch.Tensor:
        embeds = self.token_embeds[labels].clone()
        ctx = self.ctx[labels] if self.ctx.ndim == 3 else self.ctx.expand(len(labels), -1, -1)
        embeds[:, 1:1 + self.n_ctx] = ctx
        return F.normalize(self.clip.encode_text_embeddings(embeds, self.tokens[labels]).float(), dim=-1)

    def logits(self, x, n_classes: int):
        text = self.text_features(torch.arange(n_classes, device=self.device))
        return ZERO_SHOT_SCALE * F.normalize(self.image_features(x), dim=-1) @ text.T

    def forward(self, x):
        if self.training:
            return self.logits(x, self.n_classes)
        if self._eval_text is None:                 # the context is fixed during evaluation
            with torch.no_grad():
                self._eval_text = self.text_features(torch.arange(self.n_classes, device=self.device))
        return ZERO_SHOT_SCALE * F.normalize(self.image_features(x), dim=-1) @ self._eval_text.T

    def observe(self, inputs, labels, not_aug_inputs, epoch=None):
        self._eval_text = None
        self.optimizer.zero_grad()
        all_inputs, all_labels = self.with_replay(inputs, labels)
        loss = self.loss(self.logits(all_inputs, self.n_seen_classes), all_labels)
        self.backward_and_step(loss)
        self.remember(examples=not_aug_inputs, labels=labels)
        return loss.item()
