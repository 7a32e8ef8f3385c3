"""An on-disk cache of features from frozen encoders, keyed by everything that changes them.

Image features of a whole dataset split are computed once and reused across epochs, tasks,
evaluations and later runs; text features are cached per prompt string. Keys hash the encoder's
name and weights (tag or file hash), the dataset and its options, the split, the transform, the
precision and the number of augmented views, so any change misses. Files are written atomically;
deleting the cache directory is always safe.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from utils.atomic import load_torch, save_torch

FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """``$TUSK_CACHE_DIR``, else ``$XDG_CACHE_HOME/tusk``, else ``~/.cache/tusk`` (created on first write)."""
    if os.environ.get("TUSK_CACHE_DIR"):
        return Path(os.environ["TUSK_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tusk"


def cache_key(**parts: Any) -> str:
    blob = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:40]


class FeatureCache:
    """Feature files under ``root/<kind>/<key>.pt``; ``root=None`` keeps nothing on disk."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root is not None else None
        self.hits = self.misses = 0

    def _path(self, kind: str, key: str) -> Path | None:
        return self.root / kind / f"{key}.pt" if self.root is not None else None

    def load(self, kind: str, key: str) -> dict | None:
        path = self._path(kind, key)
        if path is None or not path.is_file():
            self.misses += 1
            return None
        try:
            blob = load_torch(path)
        except Exception as exc:  # noqa: BLE001 - a damaged file is recomputed, never trusted
            warnings.warn(f"ignoring unreadable cache file {path}: {exc}")
            self.misses += 1
            return None
        self.hits += 1
        return blob

    def save(self, kind: str, key: str, blob: dict) -> None:
        path = self._path(kind, key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        save_torch(path, blob)

    def get_or_compute(self, kind: str, key: str, compute: Callable[[], Tensor], meta: dict) -> Tensor:
        blob = self.load(kind, key)
        if blob is not None:
            return blob["features"]
        features = compute()
        self.save(kind, key, {"features": features, "meta": json.dumps(meta, default=str)})
        return features


class TextFeatureCache:
    """Text features per prompt string for one text encoder (weights + precision)."""

    def __init__(self, cache: FeatureCache, encoder_id: str):
        self.cache, self.key = cache, cache_key(kind="text", encoder=encoder_id)
        blob = cache.load("text", self.key)
        self.features: dict[str, Tensor] = {}
        if blob is not None:
            self.features = dict(zip(blob["prompts"], blob["features"]))

    def get(self, prompts: list[str], encode: Callable[[list[str]], Tensor]) -> Tensor:
        """Features of ``prompts`` (in order), encoding and saving only the ones not cached yet."""
        missing = list(dict.fromkeys(p for p in prompts if p not in self.features))
        if missing:
            new = encode(missing).float().cpu()
            self.features.update(zip(missing, new))
            keys = list(self.features)
            self.cache.save("text", self.key, {"prompts": keys, "features": torch.stack([self.features[k] for k in keys])})
        return torch.stack([self.features[p] for p in prompts])
