"""Backbone registry for the classic (non-CLIP) baselines.

One place lists what exists (:data:`_REGISTRY`) and one factory builds it::

    list_backbones()                      # ['resnet18', 'small-cnn']
    get_backbone_options('resnet18')      # the options dataclass (ResNet18Options)
    create_backbone('resnet18', num_classes=10, options=ResNet18Options(num_filters=20))
    create_backbone('timm:resnet10t', 10) # any timm model, wrapped to the Backbone contract

Names: local names ignore case, and ``_`` and ``-`` are equivalent (``small_cnn`` == ``small-cnn``).
``timm:<model>`` always means a timm model; a bare name that is not local but that
``timm.is_model`` accepts is a timm model too. timm is imported only when a name needs it.
"""
from __future__ import annotations

import difflib
from typing import Any

from backbone.base import RETURNT, Backbone
from backbone.resnet18 import ResNet18, ResNet18Options
from backbone.small_cnn import SmallCNN, SmallCNNOptions
from backbone.timm_backbone import TimmBackbone, TimmOptions
from utils.errors import UserError, unknown_name_error
from utils.options import NoOptions, validated

__all__ = [
    "Backbone", "RETURNT", "list_backbones", "get_backbone_options", "create_backbone",
    "resolve_backbone_name", "ResNet18", "ResNet18Options", "SmallCNN", "SmallCNNOptions",
    "TimmBackbone", "TimmOptions",
]

TIMM_PREFIX = "timm:"
_TIMM_HUB_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")  # timm resolves these itself

# name -> Backbone subclass; each class has an ``Options`` dataclass (or NoOptions) and is built
# as ``cls(num_classes, options)``.
_REGISTRY: dict[str, type[Backbone]] = {
    "resnet18": ResNet18,
    "small-cnn": SmallCNN,
}


def list_backbones() -> list[str]:
    """The local backbone names (timm models are available in addition, as ``timm:<name>``)."""
    return sorted(_REGISTRY)


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _import_timm(needed_for: str):
    try:
        import timm
    except ImportError as exc:
        raise UserError(f"backbone '{needed_for}' needs timm, which is not installed "
                        "(pip install timm)") from exc
    return timm


def _timm_known(timm: Any, model: str) -> str | None:
    """The timm spelling of ``model`` if timm knows it (also trying '-' -> '_'), else None."""
    if model.startswith(_TIMM_HUB_PREFIXES):
        return model
    for candidate in (model, model.replace("-", "_")):
        if timm.is_model(candidate):
            return candidate
    return None


def _resolve(name: str) -> tuple[str, str]:
    """``('local', registry_name)`` or ``('timm', timm_model_name)``; UserError if unknown."""
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"backbone name must be a non-empty string, got {name!r}. "
                        f"Valid backbones: {', '.join(list_backbones())} (or timm:<model>)")
    raw = name.strip()
    if raw.lower().startswith(TIMM_PREFIX):
        model = raw[len(TIMM_PREFIX):].strip()
        timm = _import_timm(raw)
        known = _timm_known(timm, model) if model else None
        if known is None:
            close = difflib.get_close_matches(model, timm.list_models(), n=3, cutoff=0.6)
            hint = f" Did you mean {', '.join(repr(TIMM_PREFIX + c) for c in close)}?" if close else ""
            raise UserError(f"unknown timm model '{model}'.{hint} timm.list_models() lists the "
                            "available names (pretrained tags such as 'resnet50.a1_in1k' work too).")
        return "timm", known
    key = _normalise(raw)
    if key in _REGISTRY:
        return "local", key
    # Bare timm names are a convenience (hub references need the explicit prefix); no timm, no match.
    try:
        import timm
    except ImportError:
        timm = None
    if timm is not None and not raw.startswith(_TIMM_HUB_PREFIXES):
        known = _timm_known(timm, raw)
        if known is not None:
            return "timm", known
    err = unknown_name_error("backbone", raw, list_backbones())
    raise UserError(f"{err}. Any timm model also works, as 'timm:<name>' "
                    "(e.g. 'timm:resnet50'; see timm.list_models()).")


def resolve_backbone_name(name: str) -> str:
    """The canonical spelling of a backbone name: a registry name or ``timm:<model>``."""
    kind, key = _resolve(name)
    return key if kind == "local" else TIMM_PREFIX + key


def get_backbone_options(name: str) -> type:
    """The options dataclass of backbone ``name`` (``utils.options.NoOptions`` if it has none)."""
    kind, key = _resolve(name)
    if kind == "timm":
        return TimmOptions
    return getattr(_REGISTRY[key], "Options", NoOptions)


def create_backbone(name: str, num_classes: int, options: Any = None) -> Backbone:
    """Build backbone ``name`` with a ``num_classes``-way classifier.

    ``options`` is an instance of ``get_backbone_options(name)``, a mapping of its fields, or None
    for the defaults; values are checked with the same rules as the command line.
    """
    kind, key = _resolve(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if kind == "timm":
        return TimmBackbone(key, num_classes, validated(TimmOptions, options, f"backbone '{TIMM_PREFIX + key}'"))
    cls = _REGISTRY[key]
    opts_cls = getattr(cls, "Options", NoOptions)
    return cls(num_classes, validated(opts_cls, options, f"backbone '{key}'"))
