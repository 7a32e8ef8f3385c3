"""Discovery of single-file components (methods, datasets): no registration list to edit.

Every module in a package is imported on first use; each class that subclasses the base and sets
``NAME`` is registered under that name (``_`` and ``-`` are equivalent); two classes with one name are a
``UserError`` naming both files, raised at discovery (else the alphabetical order of the files would pick one
silently). A module that fails to import (say, an optional dependency is missing) does not break the
others: its error is kept and raised only when one of its names is asked for.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from functools import lru_cache
from types import ModuleType

from utils.errors import UserError, unknown_name_error


def normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


@lru_cache(maxsize=None)
def _discover(package_name: str, base_qualname: str) -> tuple[dict[str, type], dict[str, BaseException]]:
    package = importlib.import_module(package_name)
    base = _resolve(base_qualname)
    found: dict[str, type] = {}
    broken: dict[str, BaseException] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.ispkg or info.name.startswith("_"):
            continue
        try:
            module: ModuleType = importlib.import_module(f"{package_name}.{info.name}")
        except Exception as exc:  # noqa: BLE001 - kept and re-raised when the name is used
            broken[normalise(info.name)] = exc
            continue
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, base) and getattr(cls, "NAME", ""):
                key = normalise(cls.NAME)
                if key in found and found[key] is not cls:
                    raise _name_clash(key, found[key], cls)
                found[key] = cls
    return found, broken


def _name_clash(name: str, first: type, second: type) -> UserError:
    def where(cls: type) -> str:
        return f"{cls.__module__.replace('.', '/')}.py ({cls.__qualname__})"
    return UserError(f"two classes are registered as '{name}': {where(first)} and {where(second)}; "
                     f"give one of them another NAME")


def _resolve(qualname: str) -> type:
    module, _, attr = qualname.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def names(package_name: str, base_qualname: str) -> list[str]:
    found, broken = _discover(package_name, base_qualname)
    return sorted(set(found) | set(broken))


def lookup(package_name: str, base_qualname: str, name: str, kind: str) -> type:
    """The class registered as ``name``, or a ``UserError`` listing the valid names."""
    found, broken = _discover(package_name, base_qualname)
    key = normalise(name)
    if key in found:
        return found[key]
    if key in broken:
        exc = broken[key]
        if isinstance(exc, UserError):             # a contract check of the file itself: already one line
            raise UserError(str(exc))
        raise UserError(f"{kind} '{name}' could not be imported: {type(exc).__name__}: {exc}")
    raise unknown_name_error(kind, name, names(package_name, base_qualname))
