"""``--mtil_order``: a named order of a multi-dataset sequence (``I``, ``II``) or any sequence of its datasets.

A comma-separated list (``--mtil_order shades,counting,icons``) trains those datasets in that order: a subset for
leave-one-out studies, or a new order. Names are matched case-insensitively, with ``-`` equal to ``_``, against the
dataset's own names and its framework aliases (``mtil``: ``DTD`` or ``dtd``).
"""
from __future__ import annotations

from typing import Mapping, Sequence

from utils.errors import UserError, unknown_name_error


def resolve_task_order(value: str, orders: Mapping[str, Sequence[str]], aliases: Mapping[str, str]) -> list[str]:
    """The task names of ``value``: a key of ``orders``, or comma-separated names (``aliases`` maps every accepted
    spelling to a task name). Unknown, repeated or missing names are one-line errors naming ``--mtil_order``."""
    if value in orders:
        return list(orders[value])
    key = lambda name: name.strip().lower().replace("-", "_")  # noqa: E731
    known = {key(a): task for a, task in aliases.items()}
    names = [n for n in value.split(",")]
    if len(names) == 1 and key(names[0]) not in known:
        valid = ", ".join(orders)
        raise UserError(f"--mtil_order: '{value}' is neither a named order ({valid}) nor a comma-separated list of "
                        f"datasets (e.g. {','.join(list(orders.values())[0][:3])})")
    tasks = []
    for name in names:
        if key(name) not in known:
            raise UserError(f"--mtil_order: {unknown_name_error('dataset', name.strip(), sorted(set(aliases.values())))}")
        task = known[key(name)]
        if task in tasks:
            raise UserError(f"--mtil_order: '{name.strip()}' is listed twice")
        tasks.append(task)
    return tasks
