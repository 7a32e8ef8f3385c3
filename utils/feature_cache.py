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

from utils import distributed
from utils.atomic import DamagedFile, load_checked, save_checked
from utils.errors import UserError

FORMAT_VERSION = 2     # 2: files carry a content checksum


def default_cache_dir() -> Path:
    """``$TUSK_CACHE_DIR``, else ``$XDG_CACHE_HOME/tusk``, else ``~/.cache/tusk`` (created on first write)."""
    if os.environ.get("TUSK_CACHE_DIR"):
        return Path(os.environ["TUSK_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tusk"


def cache_key(**parts: Any) -> str:
    blob = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:40]


#: cache directories found unwritable in this process (warned about once)
_WARNED: set[Path] = set()


class FeatureCache:
    """Feature files under ``root/<kind>/<key>.pt``; ``root=None`` keeps nothing on disk.

    Every file carries a digest of its tensors (``utils.atomic.save_checked``): a damaged, altered, wrong-shape
    or incomplete file is recomputed with a warning, never used. A cache that cannot be written (read-only, full
    disk) keeps the features in memory for this run, with one warning."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root is not None else None
        self.hits = self.misses = 0
        self.writable = True

    def _path(self, kind: str, key: str) -> Path | None:
        return self.root / kind / f"{key}.pt" if self.root is not None else None

    def load(self, kind: str, key: str, check: Callable[[dict], str | None] | None = None) -> dict | None:
        """The blob stored under ``key``, or None (missing, damaged, or refused by ``check``, which returns what
        is wrong with a blob, or None when it is fine)."""
        path = self._path(kind, key)
        if path is None or not path.is_file():
            self.misses += 1
            return None
        try:
            blob = load_checked(path, "cache file")
            problem = check(blob) if check is not None else None
        except (DamagedFile, OSError) as exc:
            problem = str(exc)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if problem is not None:
            warnings.warn(f"recomputing the features of cache file {path}: {problem}", stacklevel=2)
            self.misses += 1
            return None
        self.hits += 1
        return blob

    def save(self, kind: str, key: str, blob: dict) -> None:
        path = self._path(kind, key)
        if path is None or not self.writable or not distributed.is_local_main():   # DDP: one writer per machine
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_checked(path, blob)
        except (OSError, UserError) as exc:
            self.writable = False
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            if self.root not in _WARNED:        # once per directory and process, however many caches use it
                _WARNED.add(self.root)
                warnings.warn(f"feature cache {self.root} cannot be written ({reason}): features are kept in "
                              f"memory for this run only (--feature_cache DIR elsewhere, or off)", stacklevel=2)

    def get_or_compute(self, kind: str, key: str, compute: Callable[[], Tensor], meta: dict,
                       shape: tuple[int | None, ...] | None = None) -> Tensor:
        """The cached features of ``key``, else ``compute()`` (saved). ``shape`` (None = any size in that
        dimension) is what a cached tensor must have to be used."""
        def check(blob: dict) -> str | None:
            features = blob["features"]
            if not isinstance(features, Tensor):
                return "no feature tensor"
            return _shape_problem(features, shape)
        blob = self.load(kind, key, check)
        if distributed.active() and not distributed.all_true(blob is not None):
            blob = None                         # DDP: a rank without the file computes with the others
        if blob is not None:
            return blob["features"]
        features = compute()
        self.save(kind, key, {"features": features, "meta": json.dumps(meta, default=str)})
        return features


def _shape_problem(features: Tensor, shape: tuple[int | None, ...] | None) -> str | None:
    if shape is not None and (features.dim() != len(shape)
                              or any(s is not None and s != n for s, n in zip(shape, features.shape))):
        want = "x".join("*" if s is None else str(s) for s in shape)
        return f"shape {tuple(features.shape)}, expected {want}"
    if features.is_floating_point() and not torch.isfinite(features).all():
        return "non-finite values"
    return None


class TextFeatureCache:
    """Text features per prompt string for one text encoder (weights + precision)."""

    def __init__(self, cache: FeatureCache, encoder_id: str):
        self.cache, self.key = cache, cache_key(kind="text", encoder=encoder_id)
        blob = cache.load("text", self.key, _check_text_blob)
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


def _check_text_blob(blob: dict) -> str | None:
    prompts, features = blob["prompts"], blob["features"]
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts) or not isinstance(features, Tensor):
        return "not a list of prompts and a feature tensor"
    if features.dim() != 2 or features.shape[0] != len(prompts) or len(set(prompts)) != len(prompts):
        return f"{len(prompts)} prompts for features of shape {tuple(features.shape)}"
    return _shape_problem(features, None)
