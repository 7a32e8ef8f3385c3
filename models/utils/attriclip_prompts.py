"""AttriCLIP's attribute word bank (Wang et al., CVPR 2023) as a :class:`PromptLearner`.

A bank of N attributes, each a key ``K_i`` (image-embedding dim) and a prompt ``P_i`` (``n_ctx`` token
embeddings), is shared by every task and never reset. An image picks the ``top_k`` keys with the
highest ``f̂(x) · K_i`` (``f̂`` normalised, keys *not*, as in the original), and its prompt for class c
is ``[SOS] P_i1 .. P_ik <class name> . [EOS]``: text features are per image, (B, C, D).

Images that pick the same ordered top-k combination get identical prompts, so the text encoder runs
once per unique combination in the batch (U x C sequences, not B x C), and in eval mode each
combination's features are kept until the next ``train()``.

``aux_loss`` (training only) = ``matching_weight * (1 - mean cos(f̂(x), K_i))`` over the selected keys
(keys normalised in this term only) ``+ ortho_weight * mean |off-diagonal cos|`` of the N prompts each
encoded alone. Deviation: the original encodes ``[SOS] P_i x x .. x . [EOS]`` (its template has
``top_k * n_ctx`` literal 'x' placeholders and only the first ``n_ctx`` are replaced); here the alone
prompt is ``[SOS] P_i . [EOS]``, so no untrained filler tokens dilute the attribute being decorrelated.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbone.clip import ClipBackbone
from models.utils.prompt_learners import PromptLearner, PromptOutput, check_fits_context, class_name_text
from utils.errors import UserError

#: Sequences per text-encoder call when many combinations are new (bounds activation memory).
_CHUNK = 4096


class AttriclipPrompts(PromptLearner):
    PER_IMAGE_TEXT = True

    def __init__(self, clip: ClipBackbone, class_names: list[str], n_attributes: int = 10, n_ctx: int = 12,
                 top_k: int = 3, matching_weight: float = 0.7, ortho_weight: float = 0.3, seed: int = 0):
        super().__init__(clip, class_names)
        if not 1 <= top_k <= n_attributes:
            raise UserError(f"attriclip: --attr_top_k ({top_k}) must be between 1 and --n_attributes ({n_attributes})")
        self.n_ctx, self.top_k = n_ctx, top_k
        self.matching_weight, self.ortho_weight = matching_weight, ortho_weight
        width = clip.model.token_embedding.embedding_dim
        g = torch.Generator().manual_seed(seed)
        self.keys = nn.Parameter(torch.randn(n_attributes, clip.embed_dim, generator=g) * 0.02)
        self.prompts = nn.Parameter(torch.randn(n_attributes, n_ctx, width, generator=g) * 0.02)
        placeholder = " ".join(["X"] * (top_k * n_ctx))
        tokens = clip.tokenize([f"{placeholder} {class_name_text(n)}." for n in class_names])
        check_fits_context(tokens, "attriclip prompts",
                           f"{top_k} attributes x {n_ctx} tokens do not fit with the class names: "
                           f"lower --attr_n_ctx or --attr_top_k")
        alone = clip.tokenize([" ".join(["X"] * n_ctx) + "."])
        with torch.no_grad():
            self.register_buffer("tokens", tokens, persistent=False)
            self.register_buffer("token_embeds", clip.token_embeddings(tokens).float(), persistent=False)
            self.register_buffer("alone_tokens", alone, persistent=False)
            self.register_buffer("alone_embeds", clip.token_embeddings(alone).float(), persistent=False)
        self._combo_cache: dict[tuple[int, ...], Tensor] = {}

    def train(self, mode: bool = True):
        self._combo_cache = {}
        return super().train(mode)

    def select(self, image: Tensor) -> Tensor:
        """(B, top_k) attribute indices in descending ``f̂(x) · K`` (unnormalised keys)."""
        return (image @ self.keys.T).topk(self.top_k, dim=-1).indices

    def combo_text(self, combos: Tensor, n_classes: int, first_class: int = 0) -> Tensor:
        """(U, C, D) normalised text features of classes ``first_class .. n_classes-1`` per combination."""
        u, c = combos.shape[0], n_classes - first_class
        ctx = self.prompts[combos].flatten(1, 2)                            # (U, k * n_ctx, W)
        embeds = self.token_embeds[first_class:n_classes].expand(u, -1, -1, -1).clone()
        embeds[:, :, 1:1 + ctx.shape[1]] = ctx[:, None].to(embeds.dtype)
        embeds, tokens = embeds.flatten(0, 1), self.tokens[first_class:n_classes].repeat(u, 1)
        feats = [self.clip.encode_text_embeddings(embeds[s:s + _CHUNK], tokens[s:s + _CHUNK])
                 for s in range(0, embeds.shape[0], _CHUNK)]
        return F.normalize(torch.cat(feats).float(), dim=-1).view(u, c, -1)

    def _cached_text(self, combos: Tensor, n_classes: int, first_class: int) -> Tensor:
        """Eval mode: each combination's features are encoded once until the next ``train()``."""
        keys = [(*row, first_class, n_classes) for row in combos.tolist()]
        missing = [i for i, k in enumerate(keys) if k not in self._combo_cache]
        if missing:
            with torch.no_grad():
                new = self.combo_text(combos[missing], n_classes, first_class)
            self._combo_cache.update({keys[i]: new[j] for j, i in enumerate(missing)})
        return torch.stack([self._combo_cache[k] for k in keys])

    def forward(self, x: Tensor, n_classes: int, first_class: int = 0) -> PromptOutput:
        """Per-image text over classes ``first_class .. n_classes-1`` (``first_class`` > 0 saves encoding the
        classes a loss does not use, e.g. AttriCLIP's current-task-only cross-entropy)."""
        image = self.image_features(x)
        idx = self.select(image)
        combos, inverse = torch.unique(idx, dim=0, return_inverse=True)
        if self.training:
            text = self.combo_text(combos, n_classes, first_class)
            return PromptOutput(image, text[inverse], self.aux_loss(image, idx))
        return PromptOutput(image, self._cached_text(combos, n_classes, first_class)[inverse])

    def aux_loss(self, image: Tensor, idx: Tensor) -> Tensor:
        return self.matching_weight * self.matching_loss(image, idx) + self.ortho_weight * self.ortho_loss()

    def matching_loss(self, image: Tensor, idx: Tensor) -> Tensor:
        """1 - mean cosine between each image and its selected keys: pulls chosen keys towards the images."""
        keys = F.normalize(self.keys, dim=-1)[idx]                           # (B, k, D)
        return 1 - (image[:, None] * keys).sum(-1).mean()

    def alone_features(self) -> Tensor:
        """(N, D) normalised features of each attribute prompt alone: ``[SOS] P_i . [EOS]``."""
        n = self.prompts.shape[0]
        embeds = self.alone_embeds.expand(n, -1, -1).clone()
        embeds[:, 1:1 + self.n_ctx] = self.prompts.to(embeds.dtype)
        feats = self.clip.encode_text_embeddings(embeds, self.alone_tokens.expand(n, -1))
        return F.normalize(feats.float(), dim=-1)

    def ortho_loss(self, feats: Tensor | None = None) -> Tensor:
        """Mean |off-diagonal cosine| over the attributes' features: keeps the attributes distinct."""
        feats = self.alone_features() if feats is None else feats
        gram = feats @ feats.T
        off = ~torch.eye(gram.shape[0], dtype=torch.bool, device=gram.device)
        return gram[off].abs().mean()
