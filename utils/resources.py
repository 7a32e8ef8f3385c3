"""Whether a requested size fits the machine: checked before the allocation, with the flag named."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from utils.errors import UserError


def available_memory(device=None) -> int | None:
    """Bytes that can still be allocated on ``device`` (CPU: MemAvailable, else physical memory); None if unknown."""
    import torch
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(device)
            return int(free)
        except (RuntimeError, AssertionError):
            return None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def check_memory(nbytes: int, flag: str, what: str, device=None) -> None:
    """Refuse ``nbytes`` of ``what`` (caused by ``flag``) when it exceeds the memory available on ``device``."""
    free = available_memory(device)
    if free is not None and nbytes > free:
        raise UserError(f"{flag}: {what} needs {_gib(nbytes)}, more than the {_gib(free)} of memory available"
                        f"{'' if device is None else f' on {device}'}")


def check_disk(nbytes: int, flag: str, what: str, directory: str | Path) -> None:
    """Refuse ``nbytes`` of ``what`` to be written below ``directory`` (or its nearest existing parent) when the
    disk has less free space."""
    path = Path(directory)
    while not path.exists() and path.parent != path:
        path = path.parent
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return
    if nbytes > free:
        raise UserError(f"{flag}: {what} needs {_gib(nbytes)} on disk, more than the {_gib(free)} free under {path}")
