"""Prompt learners: what turns class names (and, for some, the image) into CLIP class features.

One small interface shared by the prompt baselines (``coop``, ``maple``, ``attriclip``) and by CLAP
(``clap4clip --prompt hand|coop|maple|attriclip``), so a prompt family is written once:

    out = learner(x, n_classes)       # x: cached image features (B, D) or preprocessed images
    out.image                         # (B, D) L2-normalised image features
    out.text                          # (C, D), or (B, C, D) when the prompt depends on the image
    out.aux_loss                      # the learner's own regulariser (AttriCLIP), or None

The frozen CLIP is *not* a submodule of a learner (it belongs to the model as ``net``), so it is
neither trained nor saved twice. ``PROMPTS_IMAGE_ENCODER`` learners (MaPLe) change the image features,
so their model cannot use the frozen-feature cache. In eval mode, learners whose text features do not
depend on the image compute them once and reuse them until the next ``train()``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbone.clip import ClipBackbone
from utils.errors import UserError


@dataclass
class PromptOutput:
    image: Tensor
    text: Tensor
    aux_loss: Tensor | None = None


def frozen_image_features(clip: ClipBackbone, x: Tensor) -> Tensor:
    """L2-normalised features of the frozen image encoder; cached features (2-D) pass through."""
    if x.ndim == 2:
        return F.normalize(x.float(), dim=-1)
    with torch.no_grad():
        return F.normalize(clip.encode_image(x).float(), dim=-1)


def class_name_text(name: str) -> str:
    """Class names as prompt learners write them (CoOp, CLAP and MaPLe replace underscores)."""
    return name.replace("_", " ")


def check_fits_context(tokens: Tensor, who: str, hint: str) -> None:
    """Raise a one-line error when a prompt is cut by the text encoder's context length."""
    if bool((tokens[:, -1] != 0).any()):
        raise UserError(f"{who}: a prompt is longer than the text encoder's context ({tokens.shape[1]} tokens); "
                        f"{hint}")


def phrase_embeddings(clip: ClipBackbone, phrase: str) -> Tensor:
    """Token embeddings of ``phrase`` without SOS/EOS: (n_tokens, width)."""
    tokens = clip.tokenize([phrase])[0]
    n = int(tokens.argmax()) - 1                      # tokens between SOS and EOS
    with torch.no_grad():
        return clip.token_embeddings(tokens[None])[0, 1:1 + n].float()


def context_init(clip: ClipBackbone, phrase: str, n_ctx: int, seed: int) -> Tensor:
    """Context vectors initialised from ``phrase`` (its token count wins) or N(0, 0.02) if it is empty."""
    if phrase.strip():
        return phrase_embeddings(clip, phrase.strip())
    width = clip.model.token_embedding.embedding_dim
    return torch.randn(n_ctx, width, generator=torch.Generator().manual_seed(seed)) * 0.02


class PromptLearner(nn.Module):
    """Base class: ``forward(x, n_classes) -> PromptOutput`` over classes ``0 .. n_classes - 1``."""

    #: True when the learner prompts the image encoder too (image features cannot be cached).
    PROMPTS_IMAGE_ENCODER: ClassVar[bool] = False
    #: True when ``text`` is per image, (B, C, D).
    PER_IMAGE_TEXT: ClassVar[bool] = False

    def __init__(self, clip: ClipBackbone, class_names: list[str]):
        super().__init__()
        self.__dict__["clip"] = clip             # not a submodule: the model owns the frozen CLIP
        self.class_names = list(class_names)
        self._eval_text: Tensor | None = None

    def train(self, mode: bool = True):
        self._eval_text = None                   # parameters may change from now on
        return super().train(mode)

    def image_features(self, x: Tensor) -> Tensor:
        return frozen_image_features(self.clip, x)

    def class_features(self, n_classes: int) -> Tensor:
        """(C, D) L2-normalised text features of classes ``0 .. n_classes-1`` (image-independent learners)."""
        raise NotImplementedError

    def forward(self, x: Tensor, n_classes: int) -> PromptOutput:
        image = self.image_features(x)
        if self.training:
            return PromptOutput(image, self.class_features(n_classes))
        if self._eval_text is None or self._eval_text.shape[0] < n_classes:
            with torch.no_grad():
                self._eval_text = self.class_features(n_classes)
        return PromptOutput(image, self._eval_text[:n_classes])


class HandCraftedPrompts(PromptLearner):
    """Fixed template-ensemble class features (nothing to learn): CLAP's hand-crafted prompts."""

    def __init__(self, clip: ClipBackbone, class_names: list[str], weights: Tensor):
        super().__init__(clip, class_names)
        self.register_buffer("weights", weights, persistent=False)

    def class_features(self, n_classes: int) -> Tensor:
        return self.weights[:n_classes]


class CoopPrompts(PromptLearner):
    """CoOp's learnable context: ``[SOS] v_1 .. v_M <class name>. [EOS]``, shared by all classes or one
    set per class (``class_specific``), through CLIP's frozen text encoder."""

    def __init__(self, clip: ClipBackbone, class_names: list[str], n_ctx: int = 4, ctx_init: str = "a photo of a",
                 class_specific: bool = False, seed: int = 0):
        super().__init__(clip, class_names)
        init = context_init(clip, ctx_init, n_ctx, seed)
        self.n_ctx = init.shape[0]
        placeholder = " ".join(["X"] * self.n_ctx)
        tokens = clip.tokenize([f"{placeholder} {class_name_text(n)}." for n in class_names])
        check_fits_context(tokens, "coop prompts", "use a shorter --ctx_init or fewer --n_ctx")
        shape = (len(class_names), *init.shape) if class_specific else init.shape
        self.ctx = nn.Parameter(init.expand(shape).clone())
        self.register_buffer("tokens", tokens, persistent=False)
        with torch.no_grad():
            self.register_buffer("token_embeds", clip.token_embeddings(tokens).float(), persistent=False)

    def class_features(self, n_classes: int) -> Tensor:
        embeds = self.token_embeds[:n_classes].clone()
        ctx = self.ctx[:n_classes] if self.ctx.ndim == 3 else self.ctx.expand(n_classes, -1, -1)
        embeds[:, 1:1 + self.n_ctx] = ctx.to(embeds.dtype)
        return F.normalize(self.clip.encode_text_embeddings(embeds, self.tokens[:n_classes]).float(), dim=-1)
