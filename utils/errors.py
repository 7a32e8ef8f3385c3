"""User-facing errors: raised anywhere, printed by ``main.py`` as one line, exit code 2."""
from __future__ import annotations

import difflib
from typing import Iterable


class UserError(Exception):
    """A mistake in the user's input (a name, a flag value, a missing file).

    ``main.py`` prints ``error: <message>`` without a traceback and exits with code 2.
    """


def closest(name: str, valid: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The valid name most like ``name`` (difflib's ratio at least ``cutoff``), or None."""
    close = difflib.get_close_matches(name, [str(v) for v in valid], n=1, cutoff=cutoff)
    return close[0] if close else None


def unknown_name_error(kind: str, name: str, valid: Iterable[str]) -> UserError:
    """``UserError`` for an unknown ``kind`` name, listing the valid names and the closest one."""
    valid = sorted(valid)
    close = closest(name, valid, cutoff=0.4)
    hint = f" Did you mean '{close}'?" if close else ""
    return UserError(f"unknown {kind} '{name}'.{hint} Valid {kind}s: {', '.join(valid)} "
                     f"(any case; '_' = '-': the only aliases)")
