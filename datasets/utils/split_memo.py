"""Rendered synthetic splits, kept in memory for the other runs of the same process.

Rendering a synthetic split is deterministic from its key (world seed, image size, split, classes, images per
class, domains) and costs tens of seconds (the 20,000 training images of seq-synth), while runs in one process
(the test suite, a notebook, a sweep of seeds: the class order changes, the images do not) ask for the same splits
again. The memo holds the most recently used splits up to ``MAX_BYTES`` and hands out copies, so nothing a run
does to its tensors reaches another run.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable

from torch import Tensor

MAX_BYTES = 256 * 2 ** 20


class SplitMemo:
    def __init__(self, max_bytes: int = MAX_BYTES):
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[Tensor, ...]] = OrderedDict()

    def get(self, key: Hashable, make: Callable[[], tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
        """``make()``'s tensors for ``key`` (copies), rendered only when the memo does not hold them."""
        if key in self._items:
            self._items.move_to_end(key)
        else:
            tensors = make()
            size = sum(t.numel() * t.element_size() for t in tensors)
            if size > self.max_bytes:
                return tensors
            while self._items and self.nbytes() + size > self.max_bytes:
                self._items.popitem(last=False)
            self._items[key] = tensors
        return tuple(t.clone() for t in self._items[key])

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for ts in self._items.values() for t in ts)

    def clear(self) -> None:
        self._items.clear()


#: the process's memo of rendered synthetic splits (seq-synth, synth-mtil)
RENDERED = SplitMemo()
