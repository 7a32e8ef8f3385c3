"""CGIL's class-specific prompts (mammoth ``models/cgil_utils/cgil_utils.py``, ``--combo_context 1``).

Each class c is ``[SOS] p_c g(t_c) <class name> . [EOS]`` through CLIP's frozen text encoder:

- ``p_c``: ``--n_context`` learned token(s) of the class, N(0, 0.02), one tensor per task (so an optimiser can take
  the seen tasks' prompts only);
- ``g(t_c)``: a token generated from the class's zero-shot text embedding ``t_c`` = CLIP's (not normalised)
  embedding of ``"a photo of a <name>"`` (no period) by an MLP shared by every class:
  Linear(E, E)-BN-SELU-Linear(E, E)-BN-SELU-Linear(E, W)-BN-SELU-Linear(W, W) (E the embedding, W the token width).

Mammoth's model is always in eval mode (its ``train()`` is overridden) and its BatchNorms keep their initial running
statistics (0 and 1), so each BN is the fixed affine map ``x / sqrt(1 + 1e-5) * gamma + beta`` even while it trains:
``--cgil_mlp_bn fixed`` (the default). ``--cgil_mlp_bn batch`` normalises with the statistics of the classes
encoded together instead (every seen class, at training and test time alike).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbone.clip import ClipBackbone
from models.utils.prompt_learners import check_fits_context, class_name_text

MLP_BN = ("fixed", "batch")


class FixedBatchNorm1d(nn.BatchNorm1d):
    """A BatchNorm1d that always normalises with its stored statistics (mammoth's eval-mode BN, whose running
    statistics never move from 0 and 1): a learnable affine map."""

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def context_generator(in_dim: int, out_dim: int, bn: str) -> nn.Sequential:
    def norm(d):
        return FixedBatchNorm1d(d) if bn == "fixed" else nn.BatchNorm1d(d, track_running_stats=False)
    return nn.Sequential(nn.Linear(in_dim, in_dim), norm(in_dim), nn.SELU(),
                         nn.Linear(in_dim, in_dim), norm(in_dim), nn.SELU(),
                         nn.Linear(in_dim, out_dim), norm(out_dim), nn.SELU(),
                         nn.Linear(out_dim, out_dim))


class CgilPrompts(nn.Module):
    """Per-class prompts and the shared token generator; ``keys(n)`` -> (n, D) normalised text keys."""

    def __init__(self, clip: ClipBackbone, class_names: list[str], task_sizes: list[int], n_context: int = 1,
                 bn: str = "fixed", seed: int = 0):
        super().__init__()
        self.__dict__["clip"] = clip                      # the model owns the frozen CLIP
        self.n_context = n_context
        width = clip.model.token_embedding.embedding_dim
        names = [class_name_text(n) for n in class_names]
        gen = torch.Generator().manual_seed(seed)
        self.prompts = nn.ParameterList([nn.Parameter(torch.randn(n, n_context, width, generator=gen) * 0.02)
                                         for n in task_sizes])
        with torch.no_grad():
            text = clip.encode_text(clip.tokenize([f"a photo of a {n}" for n in names])).float()
        self.register_buffer("text_raw", text, persistent=False)            # t_c, not normalised
        with torch.random.fork_rng(devices=[]):     # nn.Linear draws from the global RNG: seed it, leave it as it was
            torch.manual_seed(seed)
            self.generator = context_generator(text.shape[1], width, bn)
        placeholder = " ".join(["X"] * (n_context + 1))
        tokens = clip.tokenize([f"{placeholder} {n}." for n in names])
        check_fits_context(tokens, "cgil prompts", "class names too long for the text encoder's context")
        self.register_buffer("tokens", tokens, persistent=False)
        with torch.no_grad():
            self.register_buffer("token_embeds", clip.token_embeddings(tokens).float(), persistent=False)

    def learned(self, n: int) -> Tensor:
        return torch.cat(list(self.prompts))[:n]

    def keys(self, n: int) -> Tensor:
        """The L2-normalised text keys of classes ``0 .. n-1`` (with gradients)."""
        embeds = self.token_embeds[:n].clone()
        ctx = torch.cat([self.learned(n), self.generator(self.text_raw[:n]).unsqueeze(1)], dim=1)
        embeds[:, 1:2 + self.n_context] = ctx.to(embeds.dtype)
        return F.normalize(self.clip.encode_text_embeddings(embeds, self.tokens[:n], truncate=True).float(), dim=-1)
