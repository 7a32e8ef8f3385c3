"""Any timm model, wrapped to the :class:`~backbone.base.Backbone` contract.

timm is imported lazily, when a timm backbone is actually built.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from backbone.base import RETURNT, Backbone
from utils.errors import UserError
from utils.options import option


@dataclass
class TimmOptions:
    timm_pretrained: bool = option(
        False,
        "start a timm backbone from its pretrained weights; they are downloaded through timm / the "
        "Hugging Face Hub on first use (needs network access, or a pre-populated Hugging Face cache)")


class TimmBackbone(Backbone):
    """``timm.create_model(model_name, pretrained=..., num_classes=num_classes)`` as a Backbone.

    Features are ``model.forward_head(model.forward_features(x), pre_logits=True)``
    (``feature_dim = model.num_features``); logits are the model's classifier applied to them, which
    is what ``model(x)`` computes. The timm model is kept as ``self.model``; ``self.classifier``
    is its classifier module (``model.get_classifier()``), read-only.
    """

    Options = TimmOptions

    def __init__(self, model_name: str, num_classes: int, options: TimmOptions | None = None):
        super().__init__()
        self.options = options if options is not None else TimmOptions()
        self.model_name = model_name
        self.model = _create_timm_model(model_name, num_classes, self.options.timm_pretrained)
        self.num_classes = num_classes
        self.feature_dim = int(self.model.num_features)
        # Standard timm heads compute logits as classifier(pre_logits); a few (e.g. distilled
        # models with two heads) do not, and for those the full forward_head is used instead.
        clf = self.model.get_classifier()
        self._split_head = isinstance(clf, nn.Module)

    @property
    def classifier(self) -> nn.Module:
        return self.model.get_classifier()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        if not self._split_head:
            raise NotImplementedError(f"timm model '{self.model_name}' does not compute its logits "
                                      "from its pre-logits features with a single classifier")
        return self.model.get_classifier()(features)

    def forward(self, x: torch.Tensor, returnt: str = "out"):
        if self._split_head or returnt == "features":
            return super().forward(x, returnt)
        if returnt not in RETURNT:
            raise ValueError(f"returnt must be one of {', '.join(RETURNT)}, got {returnt!r}")
        maps = self.model.forward_features(x)
        logits = self.model.forward_head(maps)
        return logits if returnt == "out" else (logits, self.model.forward_head(maps, pre_logits=True))


def _create_timm_model(model_name: str, num_classes: int, pretrained: bool) -> nn.Module:
    import timm

    if not pretrained:
        return timm.create_model(model_name, pretrained=False, num_classes=num_classes)
    try:
        return timm.create_model(model_name, pretrained=True, num_classes=num_classes)
    except UserError:
        raise
    except Exception as exc:  # network errors, missing cache entries, models without weights, ...
        detail = f"{type(exc).__name__}: {exc}".strip()
        if len(detail) > 300:
            detail = detail[:297] + "..."
        raise UserError(
            f"could not load the pretrained weights of timm model '{model_name}' ({detail}). "
            "timm downloads them from the Hugging Face Hub, which needs network access: pass "
            "--timm_pretrained 0 to start from random weights, or pre-populate the Hugging Face "
            "cache (HF_HOME / HF_HUB_CACHE) on a machine that has network access.") from exc
