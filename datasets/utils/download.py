"""The one download-and-verify helper every dataset uses.

- ``Remote(url, filename, checksum)`` describes a file; checksums are ``md5:<hex>`` or ``sha256:<hex>``.
- ``fetch_remote`` downloads into ``root`` with resume (HTTP Range) into a ``.part`` file, verifies
  the checksum, and only then renames the file into place; a failed or corrupt download is removed.
  A file that is already there and verifies is never downloaded again.
- ``extract`` unpacks tar and zip archives safely: no member may land outside the target folder.
- ``require_files`` gives the one-line error for data that is missing and cannot be downloaded.
"""
from __future__ import annotations

import os
import shutil
import tarfile
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from utils.checksum import file_checksum
from utils.errors import UserError

CHUNK = 1 << 20


@dataclass(frozen=True)
class Remote:
    url: str
    filename: str
    checksum: str | None = None          # "md5:..." or "sha256:..."; None = not verifiable
    #: "http" (plain HTTP(S) with resume), "onedrive" (through onedrivedownloader) or "manual"
    kind: str = "http"


def verify(path: str | Path, checksum: str | None) -> bool:
    """Whether ``path`` exists and matches ``checksum`` (always True for ``None``)."""
    if not Path(path).is_file():
        return False
    if checksum is None:
        return True
    algorithm, _, expected = checksum.partition(":")
    if algorithm not in ("md5", "sha256") or not expected:
        raise ValueError(f"bad checksum spec {checksum!r}: expected md5:<hex> or sha256:<hex>")
    return file_checksum(path, algorithm) == expected.lower()


def check_local(path: Path, checksum: str | None, verify_data: bool) -> None:
    """Accept a local file, warning instead of failing when --verify_data 0 and it differs."""
    if verify(path, checksum):
        return
    if not verify_data:
        warnings.warn(f"{path} does not match its checksum {checksum}; using it anyway (--verify_data 0)")
        return
    raise UserError(f"{path} is corrupt or not the expected file (checksum {checksum} does not match). Delete it "
                    f"to download it again, or pass --verify_data 0 to use re-packed or subset data as it is")


def fetch_remote(remote: Remote, root: str | Path, verify_data: bool = True, timeout: float = 60) -> Path:
    """``root/remote.filename``, downloaded and verified if it is not already there."""
    root = Path(root)
    target = root / remote.filename
    if target.is_file():
        check_local(target, remote.checksum, verify_data)
        return target
    if remote.kind == "manual":
        raise UserError(f"{target} is missing and cannot be downloaded automatically: {remote.url}")
    root.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    try:
        if remote.kind == "onedrive":
            _fetch_onedrive(remote.url, part)
        else:
            _fetch_http(remote.url, part, timeout)
        if not verify(part, remote.checksum):
            part.unlink(missing_ok=True)
            raise UserError(f"downloaded {remote.url} but it does not match its checksum {remote.checksum}; "
                            f"the partial file was removed, try again")
        os.replace(part, target)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        # keep a partial HTTP download to resume from, remove anything else
        if remote.kind != "http" or not part.exists() or part.stat().st_size == 0:
            part.unlink(missing_ok=True)
        raise UserError(f"could not download {remote.url} to {target} ({type(exc).__name__}: {exc}). Download it "
                        f"by hand into {root}/ or point --data_path at a copy") from None
    return target


def _fetch_http(url: str, part: Path, timeout: float) -> None:
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        resumed = start and getattr(response, "status", 200) == 206
        with open(part, "ab" if resumed else "wb") as fh:
            shutil.copyfileobj(response, fh, CHUNK)


def _fetch_onedrive(url: str, part: Path) -> None:
    from onedrivedownloader import download
    download(url, filename=str(part), unzip=False)


def _inside(root: Path, member: str) -> bool:
    target = (root / member).resolve()
    return target == root or root in target.parents


def extract(archive: str | Path, dest: str | Path) -> Path:
    """Unpack a .tar(.gz/.bz2/.xz) or .zip into ``dest``, refusing members that would escape it.

    The archive is unpacked into a hidden folder beside its contents' destination and each top-level
    entry is then renamed into place, so an interrupted extraction never leaves a half-written folder
    that would later pass for the dataset (an entry that already exists is merged into, file by file).
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / f".{archive.name}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _extract_into(archive, staging)
        for entry in staging.iterdir():
            _move(entry, dest / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _move(src: Path, dst: Path) -> None:
    if dst.is_dir() and src.is_dir() and not src.is_symlink():
        for child in src.iterdir():
            _move(child, dst / child.name)
    else:
        os.replace(src, dst)


def _extract_into(archive: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                names = zf.namelist()
                for name in names:
                    if not _inside(root, name):
                        raise UserError(f"{archive}: refusing to extract '{name}', which is outside {dest}")
                for name in names:                  # every member checked above
                    zf.extract(name, dest)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                for member in tf.getmembers():
                    if not _inside(root, member.name):
                        raise UserError(f"{archive}: refusing to extract '{member.name}', which is outside {dest}")
                    kind = _refused_kind(member)
                    if kind:
                        raise UserError(f"{archive}: refusing to extract '{member.name}', which is a {kind} "
                                        f"(datasets hold regular files and folders only)")
                tf.extractall(dest, filter="data")
        else:
            raise UserError(f"{archive} is not a tar or zip archive (corrupt or incomplete?); delete it and retry")
    except tarfile.FilterError as exc:    # what the "data" filter refuses (absolute or escaping names, modes)
        raise UserError(f"{archive}: refusing to extract it: {exc}") from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"{archive} is corrupt ({type(exc).__name__}: {exc}); delete it and download it again") from None


def _refused_kind(member: tarfile.TarInfo) -> str | None:
    """What a tar member is when it is not something a dataset archive may unpack (links can point anywhere)."""
    if member.issym():
        return f"symbolic link (to '{member.linkname}')"
    if member.islnk():
        return f"hard link (to '{member.linkname}')"
    if member.ischr() or member.isblk():
        return "device file"
    if member.isfifo():
        return "named pipe"
    if not (member.isfile() or member.isdir()):
        return "special file"
    return None


def require_files(root: Path, paths: Iterable[str], dataset: str, how: str) -> None:
    """One-line error naming the first missing path, the expected layout and how to get the data."""
    for rel in paths:
        if not (root / rel).exists():
            raise UserError(f"{dataset}: '{root / rel}' is missing. Expected layout under {root}: "
                            f"{', '.join(paths)}. {how}")
