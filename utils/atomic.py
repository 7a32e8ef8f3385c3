"""Atomic file writes: a reader (or a crash) never sees a half-written result or checkpoint.

A write that fails because the disk is full, read-only or not writable raises :class:`OutputError` (a one-line
user error naming the file and the reason), and the earlier version of the file is left as it was. Checkpoints and
cache files can carry a digest of their content (:func:`save_checked`), verified by :func:`load_checked`.
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch

from utils.errors import UserError

#: errno values that say "this place cannot be written", not "Tusk has a bug"
_UNWRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR,
               errno.ENOENT, errno.EFBIG}
#: the key under which :func:`save_checked` stores the digest of the rest of the dict
CHECKSUM_KEY = "_tusk_checksum"
#: a directory is refused for output below this much free space (a checkpoint would not fit)
MIN_FREE_BYTES = 1 << 20


class OutputError(UserError):
    """A file could not be written (disk full, read-only, not a directory, ...)."""


class DamagedFile(UserError):
    """A file Tusk wrote earlier is unreadable, truncated, refused by ``weights_only`` or fails its checksum."""


def _reason(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno else str(exc)


def _write_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    from utils.signals import deferred          # a signal during the write takes effect after it
    path = Path(path)
    with deferred():
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            write(tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
            if isinstance(exc, OSError) and exc.errno in _UNWRITABLE:
                raise OutputError(f"cannot write {path}: {_reason(exc)}") from None
            if isinstance(exc, RuntimeError) and "file write failed" in str(exc):     # torch.save's own writer
                raise OutputError(f"cannot write {path}: {exc} (is the disk full?)") from None
            raise


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the ``.NAME.*.tmp`` files a killed write left in ``directory``; returns them."""
    removed = []
    for tmp in Path(directory).glob(".*.tmp"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def check_output_dir(path: str, flag: str) -> None:
    """Refuse, with one line naming ``flag``, an output directory that cannot be used: empty, a file, below a
    file, not writable, or on a full disk. It need not exist yet (it is created on the first write)."""
    if not str(path).strip():
        raise UserError(f"{flag}: an empty path is not a directory; give one (e.g. {flag} results)")
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise UserError(f"{flag} {path}: is a file, not a directory")
    existing = target
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is a file, so no directory can be made below it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: {existing} is not writable (read-only or no permission)")
    try:
        free = shutil.disk_usage(existing).free
    except OSError:
        return
    if free < MIN_FREE_BYTES:
        raise UserError(f"{flag} {path}: no space left on the device of {existing} ({free} bytes free)")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=2, allow_nan=False)
            fh.write("\n")
    _write_atomic(path, write)


def write_text(path: str | os.PathLike, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)
    _write_atomic(path, write)


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    _write_atomic(path, lambda tmp: torch.save(obj, tmp))


def load_torch(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Load a checkpoint without unpickling code (``weights_only=True``)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def weights_only_reason(exc: BaseException) -> str:
    """The informative line of torch's long ``weights_only`` refusal (what it refused), shortened."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error" in line:
            rest = line.split("error:", 1)[-1].strip() or (lines[i + 1] if i + 1 < len(lines) else "")
            return rest[:160] or "refused"
    return (lines[0] if lines else type(exc).__name__)[:160]


def save_checked(path: str | os.PathLike, obj: dict) -> None:
    """:func:`save_torch` of ``obj`` with a digest of its content (every tensor's bytes, every value) added."""
    from utils.checksum import content_digest
    save_torch(path, {**obj, CHECKSUM_KEY: content_digest(obj)})


def load_checked(path: str | os.PathLike, what: str, map_location: Any = "cpu") -> dict:
    """The dict :func:`save_checked` wrote, after checking its digest; :class:`DamagedFile` (one line naming
    ``what``) when the file is empty, truncated, not a checkpoint, refused by ``weights_only`` or altered."""
    from utils.checksum import content_digest
    path = Path(path)
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DamagedFile(f"{what} {path} is damaged, or holds Python objects that are not loaded "
                          f"(weights_only=True: {weights_only_reason(exc)})") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, zipfile.BadZipFile, AttributeError,
            TypeError, IndexError) as exc:
        if isinstance(exc, OSError) and not path.is_file():
            raise
        size = path.stat().st_size if path.is_file() else 0
        detail = "it is empty" if size == 0 else f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160]}" \
            if str(exc).strip() else type(exc).__name__
        raise DamagedFile(f"{what} {path} is damaged or not a Tusk file ({detail})") from None
    if not isinstance(blob, dict) or CHECKSUM_KEY not in blob:
        raise DamagedFile(f"{what} {path} has no checksum: it was not written by this version of Tusk, or altered")
    expected = blob.pop(CHECKSUM_KEY)
    if content_digest(blob) != expected:
        raise DamagedFile(f"{what} {path} is damaged: its content does not match its checksum")
    return blob
