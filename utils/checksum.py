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
