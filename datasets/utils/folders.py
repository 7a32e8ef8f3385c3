"""Local dataset folders: one-line errors for missing data, atomic extraction of downloaded archives,
class-folder (ImageFolder) listings, ``<path> <label>`` file lists and image-count checks.

These are the format-independent pieces the file-backed sources share; the download itself and
checksums are :mod:`datasets.utils.download`.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from datasets.utils.download import Remote, extract, fetch_remote
from utils.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def fetch_file(remote: Remote, folder: Path, download: bool, verify_data: bool, missing: str) -> Path:
    """``folder/remote.filename``, verified; downloaded if absent and ``download``, else ``UserError(missing)``."""
    if not (folder / remote.filename).is_file() and not download:
        raise UserError(missing)
    return fetch_remote(remote, folder, verify_data)


def ensure_extracted(remote: Remote, root: Path, folder: str, download: bool, verify_data: bool,
                     missing: str) -> Path:
    """``root/folder``, the top folder of an archive, extracting (and first downloading) the archive if needed.

    An existing folder is used as it is (callers check its contents). Otherwise the archive
    ``root/remote.filename`` is verified, or downloaded when ``download``, else ``UserError(missing)``.
    ``extract`` renames its contents into place only once they are complete, so an interrupted extraction
    never leaves a half folder behind that would later pass for the dataset.
    """
    target = root / folder
    if target.is_dir():
        return target
    archive = fetch_file(remote, root, download, verify_data, missing)
    extract(archive, root)                      # atomic per top-level entry
    if not target.is_dir():
        raise UserError(f"{archive} has no top folder '{folder}/': not the expected archive; delete it and "
                        f"download it again from {remote.url}")
    return target


def list_images(folder: Path) -> list[str]:
    """Sorted names of the image files directly in ``folder`` (by extension, any case)."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file())


def class_folders(folder: Path) -> list[str]:
    """Sorted names of the (non-hidden) subfolders of ``folder``: the classes of an ImageFolder tree."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def scan_class_folders(folder: Path, classes: list[str]) -> tuple[list[str], list[int]]:
    """Paths and labels of ``folder/<class>/<image>`` for each class (label = position in ``classes``)."""
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = list_images(folder / name)
        paths.extend(str(folder / name / f) for f in files)
        labels.extend([label] * len(files))
    return paths, labels


def read_file_list(path: Path) -> list[tuple[str, int]]:
    """``(relative path, label)`` from a text file of ``<relative path> <integer label>`` lines."""
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        rel, _, label = line.strip().rpartition(" ")
        if not rel or not label.lstrip("-").isdigit():
            raise UserError(f"{path}:{number}: expected '<relative path> <integer label>', got '{line.strip()}'")
        entries.append((rel.strip(), int(label)))
    return entries


def check_count(what: str, found: int, expected: int, verify_data: bool, fix: str) -> None:
    """The check of extracted data that has no checksum: ``found`` items where the dataset has ``expected``.
    A mismatch is an error naming ``fix``, or a warning with ``--verify_data 0`` (subset or re-packed data)."""
    if found == expected:
        return
    message = f"{what}: found {found}, expected {expected}"
    if not verify_data:
        warnings.warn(f"{message}; using it anyway (--verify_data 0)")
        return
    raise UserError(f"{message}; {fix}. Pass --verify_data 0 to use subset or re-packed data as it is")
