"""A frozen snapshot of a network, e.g. the teacher of a distillation loss."""
from __future__ import annotations

from copy import deepcopy

from torch import nn


class FrozenNet(nn.Module):
    """Always in eval mode (``model.train()`` does not reach it), never trained, saved in checkpoints."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = deepcopy(net).requires_grad_(False).eval()

    def train(self, mode: bool = True) -> "FrozenNet":
        return super().train(False)

    def forward(self, *args, **kwargs):
        return self.net(*args, **kwargs)

    def update(self, net: nn.Module) -> None:
        """Copy the current weights of ``net`` into the snapshot."""
        self.net.load_state_dict(net.state_dict())
