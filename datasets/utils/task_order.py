"""``--mtil_order``: a named order of a multi-dataset sequence (``I``, ``II``) or any sequence of its datasets.

A comma-separated list (``--mtil_order shades,counting,icons``) trains those datasets in that order: a subset for
leave-one-out studies, or a new order. Names are matched case-insensitively, with ``-`` equal to ``_``, against the
dataset's own names and its framework aliases (``mtil``: ``DTD`` or ``dtd``).
"""
from __future__ import annotations

from typing import Mapping, Sequence

from utils.errors import UserError, unknown_name_error


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def resolve_task_order(value: str, orders: Mapping[str, Sequence[str]], aliases: Mapping[str, str]) -> list[str]:
    """The task names of ``value``: a key of ``orders``, or comma-separated names (``aliases`` maps every accepted
    spelling to a task name). Unknown, repeated or missing names are one-line errors naming ``--mtil_order``."""
    if value in orders:
        return list(orders[value])
    known = {_key(a): task for a, task in aliases.items()}
    names = value.split(",")
    if len(names) == 1 and _key(value) not in known:
        example = ",".join(next(iter(orders.values()))[:3])
        raise UserError(f"--mtil_order: '{value}' is neither a named order ({', '.join(orders)}) nor a "
                        f"comma-separated list of datasets (e.g. {example})")
    tasks = []
    for name in names:
        if _key(name) not in known:
            error = unknown_name_error("dataset", name.strip(), set(aliases.values()))
            raise UserError(f"--mtil_order: {error}")
        task = known[_key(name)]
        if task in tasks:
            raise UserError(f"--mtil_order: '{name.strip()}' is listed twice")
        tasks.append(task)
    return tasks
