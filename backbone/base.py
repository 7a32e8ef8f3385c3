"""The :class:`Backbone` contract shared by every network the classic (non-CLIP) baselines train."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

RETURNT = ("out", "features", "both")


class Backbone(nn.Module):
    """A classification network with an explicit feature extractor / classifier split.

    Contract:

    * ``forward(x, returnt='out')`` returns the logits ``(B, num_classes)``;
      ``returnt='features'`` returns the pre-classifier features ``(B, feature_dim)``;
      ``returnt='both'`` returns ``(logits, features)``.
    * attributes ``feature_dim`` and ``num_classes`` (and ``options``, the options dataclass
      instance the backbone was built from).
    * local backbones keep their classifier as an ``nn.Linear`` attribute named ``classifier``.

    Subclasses implement :meth:`forward_features` (input -> pooled features) and, unless the
    default ``self.classifier(features)`` fits, :meth:`forward_head` (features -> logits).
    """

    feature_dim: int
    num_classes: int
    options: Any

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Input batch -> pre-classifier features of shape ``(B, feature_dim)``."""
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Pre-classifier features -> logits of shape ``(B, num_classes)``."""
        return self.classifier(features)

    def forward(self, x: torch.Tensor, returnt: str = "out"):
        if returnt not in RETURNT:
            raise ValueError(f"returnt must be one of {', '.join(RETURNT)}, got {returnt!r}")
        features = self.forward_features(x)
        if returnt == "features":
            return features
        logits = self.forward_head(features)
        return logits if returnt == "out" else (logits, features)
