"""File checksums, streamed: dataset files, checkpoints and model weights are verified the same way."""
from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def file_checksum(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of ``path`` with ``algorithm`` ("md5", "sha256", ...)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    return file_checksum(path, "sha256")


def content_digest(obj) -> str:
    """SHA-256 of a checkpoint-like object: nested dicts, lists and tuples of tensors, arrays, numbers, strings
    and ``None``, in order (dict keys sorted). Each tensor contributes its dtype, shape and bytes, so a changed
    value, shape or key changes the digest; what it was saved from (device, strides) does not."""
    h = hashlib.sha256()
    _digest(obj, h)
    return h.hexdigest()


def _digest(obj, h) -> None:
    import numpy as np
    import torch
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.layout == torch.strided and not t.is_quantized:
            flat = t.cpu().contiguous().reshape(-1)
            h.update(memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else b"")
        else:
            h.update(repr(t.cpu()).encode())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=repr):
            _digest(key, h)
            _digest(obj[key], h)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}".encode())
        for item in obj:
            _digest(item, h)
    elif isinstance(obj, np.ndarray):
        h.update(f"A{obj.dtype}{obj.shape}".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    else:
        h.update(f"S{type(obj).__name__}:{obj!r}".encode())
