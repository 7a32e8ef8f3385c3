"""MaPLe's multi-modal prompts (Khattak et al., CVPR 2023) through CLIP's frozen encoders.

Text: ``[SOS] c_1 .. c_M <rest of ctx_init> <class name>. [EOS]``. With ``ctx_init`` "a photo of a" and
M = 2 only "a photo" initialises the learned ``c``; "of a" stays as fixed tokens (as in MaPLe).
Vision: ``proj(c)`` (Linear text width -> vision width) is appended after the patch tokens, before
``ln_pre``. Layers 2 .. depth get fresh learnable text prompts ``P_i`` (N(0, 0.02)) that *replace* the
previous layer's prompt outputs (text positions 1..M), and, through their own coupling
``F_i`` (Linear), the vision prompts ``F_i(P_i)`` that replace the last M vision tokens. After layer
``depth`` prompt outputs propagate. ``depth`` is clamped to the shallower encoder (micro-clip's text
encoder has 3 layers); ``self.depth`` is the depth in effect.

Everything above trains: context, ``proj``, deep text prompts and couplings. (CLAP4CLIP's
``maple_variational`` froze all but the first-layer context by accident, through a name filter in its
optimizer; that bug is not reproduced.) The text depends only on the prompts, so eval-mode text
features are computed once (the base class caches them); image features always run the prompted
vision encoder, so the model cannot use cached frozen features.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbone.clip import ClipBackbone
from models.utils.prompt_learners import (PromptLearner, check_fits_context, class_name_text, context_init,
                                          phrase_embeddings)
from utils.errors import UserError


def run_block(transformer: nn.Module, block: nn.Module, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
    """One residual block of an open_clip ``Transformer`` on (N, L, D) tokens, in its own layout."""
    if getattr(transformer, "batch_first", True):
        return block(x, attn_mask=attn_mask)
    return block(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)


class MaplePrompts(PromptLearner):
    PROMPTS_IMAGE_ENCODER = True

    def __init__(self, clip: ClipBackbone, class_names: list[str], n_ctx: int = 2, ctx_init: str = "a photo of a",
                 depth: int = 9, seed: int = 0):
        super().__init__(clip, class_names)
        m = clip.model
        if depth < 1:
            raise UserError(f"maple prompts: the prompt depth must be at least 1 (got {depth})")
        self.requested_depth = depth
        self.depth = min(depth, len(m.transformer.resblocks), len(m.visual.transformer.resblocks))
        self.n_ctx = n_ctx
        phrase = ctx_init.strip()
        if phrase:
            words = phrase_embeddings(clip, phrase)
            if words.shape[0] < n_ctx:
                raise UserError(f"maple prompts: --n_ctx {n_ctx} is more than the {words.shape[0]} tokens of "
                                f"--ctx_init '{phrase}'; use a longer phrase or --ctx_init ''")
            init = words[:n_ctx]
        else:
            init, phrase = context_init(clip, "", n_ctx, seed), " ".join(["X"] * n_ctx)
        tokens = clip.tokenize([f"{phrase} {class_name_text(n)}." for n in class_names])
        check_fits_context(tokens, "maple prompts", "use a shorter --ctx_init or fewer --n_ctx")
        text_width, vision_width = init.shape[1], m.visual.conv1.out_channels
        with torch.random.fork_rng(devices=[]):       # the prompts depend on the seed alone
            torch.manual_seed(seed)
            self.ctx = nn.Parameter(init.clone())
            self.proj = nn.Linear(text_width, vision_width)
            self.deep_text = nn.ParameterList(nn.Parameter(torch.randn(n_ctx, text_width) * 0.02)
                                              for _ in range(self.depth - 1))
            coupling = nn.Linear(text_width, vision_width)   # MaPLe clones one layer for every depth
            self.deep_proj = nn.ModuleList(copy.deepcopy(coupling) for _ in range(self.depth - 1))
        self.register_buffer("tokens", tokens, persistent=False)
        with torch.no_grad():
            self.register_buffer("token_embeds", clip.token_embeddings(tokens).float(), persistent=False)

    def _replace(self, x: Tensor, prompt: Tensor, start: int) -> Tensor:
        """``x`` with tokens ``start .. start + n_ctx`` replaced by ``prompt`` (n_ctx, D) for every row."""
        p = prompt.to(x.dtype).expand(x.shape[0], -1, -1)
        return torch.cat([x[:, :start], p, x[:, start + self.n_ctx:]], dim=1)

    def class_features(self, n_classes: int) -> Tensor:
        m = self.clip.model
        cast = m.transformer.get_cast_dtype()
        x = self._replace(self.token_embeds[:n_classes].to(cast), self.ctx, 1) + m.positional_embedding.to(cast)
        for i, block in enumerate(m.transformer.resblocks):
            if 1 <= i < self.depth:
                x = self._replace(x, self.deep_text[i - 1], 1)
            x = run_block(m.transformer, block, x, m.attn_mask)    # causal mask: the length is unchanged
        x = m.ln_final(x)
        x = x[torch.arange(n_classes, device=x.device), self.tokens[:n_classes].argmax(dim=-1)]
        proj = m.text_projection
        x = proj(x) if isinstance(proj, nn.Linear) else x if proj is None else x @ proj
        return F.normalize(x.float(), dim=-1)

    def image_features(self, x: Tensor) -> Tensor:
        """L2-normalised features of the prompted vision encoder (open_clip's ``VisionTransformer.forward``
        with prompt tokens); pooling sees only the class and patch tokens, as the encoder was trained."""
        if x.ndim != 4:
            raise UserError("maple prompts the image encoder: it needs images, not cached features")
        v = self.clip.model.visual
        self.clip.encoder_calls += x.shape[0]
        x = v.conv1(x.to(v.conv1.weight.dtype))
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        x = torch.cat([v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1), x], dim=1)
        x = v.patch_dropout(x + v.positional_embedding.to(x.dtype))
        n = x.shape[1]
        x = v.ln_pre(torch.cat([x, self.proj(self.ctx).to(x.dtype).expand(x.shape[0], -1, -1)], dim=1))
        for i, block in enumerate(v.transformer.resblocks):
            if 1 <= i < self.depth:
                x = self._replace(x, self.deep_proj[i - 1](self.deep_text[i - 1]), n)
            x = run_block(v.transformer, block, x)
        x = x[:, :n]                                 # drop the prompt tokens before pooling
        if hasattr(v, "_pool"):
            pooled, _ = v._pool(x)
        else:                                        # open_clip before _pool existed: ln_post, then pool
            pooled, _ = v._global_pool(v.ln_post(x))
        if v.proj is not None:
            pooled = pooled @ v.proj
        return F.normalize(pooled.float(), dim=-1)
