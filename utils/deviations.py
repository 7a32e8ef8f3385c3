"""Each method's "Deviations from the reference" list, and ``python main.py --model M --list_deviations``.

Every method documents what differs from the released code it reproduces (and why, and the flag that
restores the original) as the last section of its docstring (the class's, else its module's):

    Deviations from the reference:
    - first item, which may continue
      on indented lines;
    - second item.

:func:`deviations` parses that list; :func:`list_deviations_command` prints it for the command line.
"""
from __future__ import annotations

import argparse
import inspect
import sys
from typing import Sequence

from utils.errors import UserError

HEADING = "Deviations from the reference:"


def method_docstring(cls: type) -> str:
    """The class's own docstring, else its module's (a method file documents itself in either)."""
    own = cls.__dict__.get("__doc__")
    if own and HEADING[:-1] in own:
        return inspect.cleandoc(own)
    module = sys.modules.get(cls.__module__)
    return inspect.cleandoc((module.__doc__ if module is not None else None) or own or "")


def parse_deviations(doc: str) -> list[str]:
    """The items of the ``Deviations from the reference:`` list that ends ``doc`` (empty if it has none); the
    heading may carry a remark before its colon (``Deviations from the reference (besides lwf-clip's):``).
    An item starts with ``- `` and runs over the following more-indented or non-bullet lines."""
    lines = inspect.cleandoc(doc).splitlines()
    start = next((i for i, line in enumerate(lines)
                  if line.strip().startswith(HEADING[:-1]) and line.strip().endswith(":")), None)
    if start is None:
        return []
    items: list[str] = []
    for line in lines[start + 1:]:
        text = line.strip()
        if not text:
            continue
        if text.startswith("- "):
            items.append(text[2:].strip())
        elif items:
            items[-1] += " " + text
        else:
            return []                      # prose after the heading is not a list
    return items


def deviations(cls: type) -> list[str]:
    """The deviation list of method class ``cls``."""
    return parse_deviations(method_docstring(cls))


def wants_list_deviations(argv: Sequence[str]) -> bool:
    """Whether ``argv`` asks for ``--list_deviations`` (bare, or with a true value)."""
    from utils.options import _FALSE, _TRUE
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--list_deviations", "--list-deviations", nargs="?", const="1", default="0")
    known, _ = parser.parse_known_args(list(argv))
    value = known.list_deviations.strip().lower()
    if value not in _TRUE | _FALSE:
        raise UserError(f"--list_deviations: expected 0/1/true/false, got '{known.list_deviations}'")
    return value in _TRUE


def list_deviations_command(argv: Sequence[str]) -> str:
    """The text ``--list_deviations`` prints for ``--model M`` (``UserError`` for a missing or unknown model)."""
    from models import get_model_class
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--model")
    known, _ = parser.parse_known_args(list(argv))
    if not known.model:
        raise UserError("--list_deviations needs --model M (the method whose deviations to list)")
    cls = get_model_class(known.model)
    items = deviations(cls)
    if not items:
        raise UserError(f"model '{cls.NAME}' documents no '{HEADING}' list (its docstring must end with one)")
    body = "\n".join(f"- {item}" for item in items)
    return f"{cls.NAME}: deviations from the reference\n{body}"
