"""MATLAB ``.mat`` files of the file-backed datasets that keep their metadata in them (Flowers-102's labels
and splits, Stanford Cars' class names and annotations), read with scipy."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from utils.errors import UserError


def load_mat(path: Path, dataset: str) -> dict[str, Any]:
    """A MATLAB file as ``scipy.io.loadmat(path, squeeze_me=True)``; a damaged one is a ``UserError``."""
    from scipy.io import loadmat
    try:
        return loadmat(path, squeeze_me=True)
    except Exception as exc:  # noqa: BLE001 - scipy raises ValueError, TypeError, OSError... on damaged files
        raise UserError(f"{dataset}: {path} is not a readable MATLAB file ({type(exc).__name__}: {exc}); delete it "
                        f"and get it again") from None


def mat_field(path: Path, key: str, dataset: str) -> Any:
    """Entry ``key`` of the MATLAB file ``path``, or a ``UserError`` saying it is not the expected file."""
    mat = load_mat(path, dataset)
    if key not in mat:
        raise UserError(f"{dataset}: {path} has no '{key}' entry; it is not the expected file")
    return mat[key]
