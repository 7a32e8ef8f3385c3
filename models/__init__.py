"""Continual-learning methods: one file each in this folder, found by their ``NAME``.

``get_model_class('er')`` returns the class; ``list_models()`` the names. Adding a method is adding
one file with a ``ContinualModel`` subclass (see README, "Adding a method").
"""
from __future__ import annotations

from utils import registry

_BASE = "models.utils.continual_model.ContinualModel"


def list_models() -> list[str]:
    return registry.names(__name__, _BASE)


def get_model_class(name: str) -> type:
    return registry.lookup(__name__, _BASE, name, "model")
