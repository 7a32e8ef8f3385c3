"""Rehearsal memories: a reservoir buffer and a class-balanced exemplar buffer.

Both store named tensor *columns* (``examples``, ``labels``, ``logits``, ``task_labels``, or
``indexes`` when the caller keeps dataset indices instead of images). Storage is created on the
first add from each column's dtype and per-item shape; every later add must pass the same columns
with the same dtype and per-item shape. Stored tensors live on the buffer's ``device``; incoming
tensors are detached and copied there.

Randomness comes only from ``torch.Generator`` objects: those passed in, or the CPU generators the
buffer owns (seeded from ``seed``). Owned generators stay on the CPU whatever the device, so the same
seed gives the same contents on CPU and GPU. Their states are part of ``state_dict()``, so a resumed
run continues exactly as an uninterrupted one would.

``state_dict()`` holds only tensors, ints, strs, lists and dicts (loadable with
``torch.load(path, weights_only=True)``); its tensors are copies, unaffected by later adds.
"""
from __future__ import annotations

import torch

from utils.errors import UserError

__all__ = ["ReservoirBuffer", "ClassBalancedBuffer"]

# The owned sampling generator is seeded with ``seed + _SAMPLE_SEED_OFFSET`` so that sampling (how
# often, how much) never changes which items a reservoir keeps, which uses its own generator.
_SAMPLE_SEED_OFFSET = 0x5EED


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(f"{name} must be a positive integer, got {value!r}")
    return value


class _ColumnMemory:
    """Column storage, sampling and state shared by the buffers.

    ``self._columns[name]`` has at least ``self._size`` rows; rows ``[0, _size)`` are the stored items.
    """

    def __init__(self, device: str | torch.device = "cpu", seed: int = 0):
        self.device = torch.device(device)
        self.seed = int(seed)
        self._sample_generator = torch.Generator(device="cpu").manual_seed(self.seed + _SAMPLE_SEED_OFFSET)
        self._columns: dict[str, torch.Tensor] = {}
        self._size = 0

    # ------------------------------------------------------------------ inspection
    def __len__(self) -> int:
        return self._size

    def is_empty(self) -> bool:
        return self._size == 0

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(self._columns)

    def get_all(self) -> dict[str, torch.Tensor]:
        """All stored items, one tensor per column. These are views of the storage: do not modify
        them, and do not rely on them after the next add/update."""
        return {name: col[: self._size] for name, col in self._columns.items()}

    def sample(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``min(n, len(self))`` distinct items, drawn uniformly without replacement (copies).

        Uses ``generator`` if given (on any device), else the buffer's own sampling generator.
        """
        if n < 0:
            raise ValueError(f"cannot sample a negative number of items ({n})")
        n = min(int(n), self._size)
        g = generator if generator is not None else self._sample_generator
        idx = torch.randperm(self._size, generator=g, device=g.device)[:n].to(self.device)
        return {name: col[idx] for name, col in self._columns.items()}

    # ------------------------------------------------------------------ helpers
    def _prepare(self, columns: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
        """Validate a batch of columns against the storage; return them on ``self.device`` and B."""
        if not columns:
            raise ValueError("no columns given")
        sizes = set()
        out = {}
        for name, t in columns.items():
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"column '{name}' must be a torch.Tensor, got {type(t).__name__}")
            if t.dim() == 0:
                raise ValueError(f"column '{name}' must have a leading batch dimension")
            sizes.add(t.shape[0])
            out[name] = t.detach().to(self.device)
        if len(sizes) != 1:
            raise ValueError("all columns must have the same number of items, got "
                             + ", ".join(f"{k}: {v.shape[0]}" for k, v in columns.items()))
        if self._columns:
            if set(out) != set(self._columns):
                raise ValueError(f"columns {sorted(out)} differ from the stored columns "
                                 f"{sorted(self._columns)}")
            for name, t in out.items():
                ref = self._columns[name]
                if t.dtype != ref.dtype or t.shape[1:] != ref.shape[1:]:
                    raise ValueError(
                        f"column '{name}': got dtype {t.dtype} and item shape {tuple(t.shape[1:])}, "
                        f"stored dtype {ref.dtype} and item shape {tuple(ref.shape[1:])}")
        return out, sizes.pop()

    def _base_state(self) -> dict:
        return {
            "seed": self.seed,
            "size": self._size,
            "columns": {name: col[: self._size].clone() for name, col in self._columns.items()},
            "sample_generator": self._sample_generator.get_state(),
        }

    def _check_state(self, state: dict, expected: dict) -> None:
        if state.get("type") != type(self).__name__:
            raise ValueError(f"state is for {state.get('type')!r}, not {type(self).__name__}")
        for key, value in expected.items():
            if state.get(key) != value:
                raise ValueError(f"state has {key}={state.get(key)!r}, this buffer has {value!r}")

    def _load_base(self, state: dict, rows: int | None) -> None:
        """Restore columns (allocating ``rows`` rows per column, or exactly the stored ones if None)."""
        self.seed = int(state["seed"])
        self._size = int(state["size"])
        self._columns = {}
        for name, saved in state["columns"].items():
            saved = saved.to(self.device)
            if rows is None:
                self._columns[name] = saved.clone()
            else:
                col = torch.zeros((rows, *saved.shape[1:]), dtype=saved.dtype, device=self.device)
                col[: saved.shape[0]] = saved
                self._columns[name] = col
        self._sample_generator.set_state(state["sample_generator"].cpu())


class ReservoirBuffer(_ColumnMemory):
    """Fixed-capacity memory filled by reservoir sampling (Vitter's algorithm R) over the stream.

    The item at 0-based stream position ``i`` goes to slot ``i`` while ``i < capacity``; afterwards it
    draws ``j ~ U{0..i}`` and replaces slot ``j`` if ``j < capacity``. Every stream item thus ends up
    in the buffer with probability ``capacity / num_seen``.

    Draw scheme (fixed, so that a sequential reference consuming the same draws exists): for a
    batch, the items with ``i >= capacity`` (a suffix of the batch), in stream order, take one
    ``u = torch.rand(m, dtype=torch.float64, generator=<insert generator>)`` each and
    ``j = floor(u * (i + 1))``. When several items of a batch land in the same slot, the latest in
    stream order wins, exactly as in the sequential algorithm (resolved by sorting, not by relying
    on the order of ``index_put``).
    """

    def __init__(self, capacity: int, device: str | torch.device = "cpu", seed: int = 0):
        super().__init__(device, seed)
        self.capacity = _check_positive_int("buffer capacity", capacity)
        self.num_seen = 0
        self._insert_generator = torch.Generator(device="cpu").manual_seed(self.seed)

    def add(self, **columns: torch.Tensor) -> None:
        """Offer a batch of B items (one tensor per column, each with leading dimension B)."""
        cols, batch = self._prepare(columns)
        if not self._columns:
            from utils.resources import check_memory
            per_item = sum(t[0].numel() * t.element_size() for t in cols.values()) if batch else 0
            check_memory(self.capacity * per_item, "--buffer_size",
                         f"a memory of {self.capacity} items ({per_item} bytes each)", self.device)
            self._columns = {
                name: torch.zeros((self.capacity, *t.shape[1:]), dtype=t.dtype, device=self.device)
                for name, t in cols.items()}
        if batch == 0:
            return
        slots, winners = self._reservoir_slots(batch)
        if slots.numel():
            slots, winners = slots.to(self.device), winners.to(self.device)
            for name, t in cols.items():
                self._columns[name][slots] = t[winners]
        self.num_seen += batch
        self._size = min(self.capacity, self.num_seen)

    def _reservoir_slots(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(slots, winning batch indices), on the CPU, for a batch of ``batch`` stream items."""
        pos = torch.arange(self.num_seen, self.num_seen + batch, dtype=torch.int64)
        target = pos.clone()
        late = pos >= self.capacity
        m = int(late.sum())
        if m:
            u = torch.rand(m, dtype=torch.float64, generator=self._insert_generator)
            late_pos = pos[late]
            j = torch.floor(u * (late_pos + 1).to(torch.float64)).to(torch.int64)
            j = torch.minimum(j, late_pos)  # guard against rounding u*(i+1) up to i+1
            target[late] = torch.where(j < self.capacity, j, torch.full_like(j, -1))
        item = torch.arange(batch, dtype=torch.int64)
        taken = target >= 0
        t, it = target[taken], item[taken]
        # Sort by (slot, item); the last entry of each slot's run is the latest item: it wins.
        order = torch.argsort(t * batch + it)
        t, it = t[order], it[order]
        last = torch.ones_like(t, dtype=torch.bool)
        last[:-1] = t[1:] != t[:-1]
        return t[last], it[last]

    def state_dict(self) -> dict:
        state = self._base_state()
        state.update(type=type(self).__name__, capacity=self.capacity, num_seen=self.num_seen,
                     insert_generator=self._insert_generator.get_state())
        return state

    def load_state_dict(self, state: dict) -> None:
        self._check_state(state, {"capacity": self.capacity})
        self._load_base(state, rows=self.capacity)
        self.num_seen = int(state["num_seen"])
        self._insert_generator.set_state(state["insert_generator"].cpu())


class ClassBalancedBuffer(_ColumnMemory):
    """Per-class exemplar sets (iCaRL-style).

    Exactly one of ``buffer_size`` (a fixed total: each class gets ``buffer_size // n_classes``,
    the remainder stays unused, as in iCaRL) or ``per_class`` (a fixed number per class; the memory
    grows with the classes) must be given.

    Each class's exemplars are kept in priority order, so shrinking a class to a smaller quota keeps
    its highest-priority items (for herding, the prefix of a herding sequence is itself the herding
    selection of that size). Items are stored grouped by class (ascending label), in priority order
    within a class.
    """

    def __init__(self, buffer_size: int | None = None, per_class: int | None = None,
                 device: str | torch.device = "cpu", seed: int = 0):
        super().__init__(device, seed)
        if (buffer_size is None) == (per_class is None):
            raise UserError("give exactly one of buffer_size (a fixed total memory) and per_class "
                            f"(a fixed number per class); got buffer_size={buffer_size!r}, "
                            f"per_class={per_class!r}")
        self.buffer_size = None if buffer_size is None else _check_positive_int("buffer_size", buffer_size)
        self.per_class = None if per_class is None else _check_positive_int("per_class", per_class)
        self._seen = torch.empty(0, dtype=torch.int64, device=self.device)

    def quota(self, n_classes: int) -> int:
        """Exemplars per class when ``n_classes`` classes share the memory."""
        if self.per_class is not None:
            return self.per_class
        if n_classes <= 0:
            raise ValueError(f"quota needs a positive number of classes, got {n_classes}")
        return self.buffer_size // n_classes

    def classes(self) -> torch.Tensor:
        """Every class seen so far (sorted), including any whose quota has dropped to 0."""
        return self._seen.clone()

    def update(self, columns: dict[str, torch.Tensor], ranking: torch.Tensor) -> None:
        """Add the classes of ``columns`` and re-balance.

        ``columns``: candidate items of classes not seen before (must include ``labels``).
        ``ranking``: LongTensor of distinct indices into the candidates in priority order (a class's
        items appear in priority order; classes may be interleaved; candidates left out are never
        kept), e.g. the output of :func:`utils.exemplar_selection.rank_exemplars`.
        Afterwards every class seen so far holds the first ``quota(n_classes_total)`` of its items in
        priority order (old classes truncated to that prefix).
        """
        if "labels" not in columns:
            raise ValueError("update needs a 'labels' column")
        cols, batch = self._prepare(columns)
        labels = cols["labels"]
        if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"'labels' must be a 1-D integer tensor, got {labels.dtype} {tuple(labels.shape)}")
        ranking = torch.as_tensor(ranking).to(self.device)
        if ranking.dim() != 1 or ranking.dtype.is_floating_point:
            raise ValueError("ranking must be a 1-D LongTensor of candidate indices")
        ranking = ranking.long()
        if ranking.numel():
            if int(ranking.min()) < 0 or int(ranking.max()) >= batch:
                raise ValueError(f"ranking indices must lie in [0, {batch})")
            if torch.unique(ranking).numel() != ranking.numel():
                raise ValueError("ranking contains repeated indices")

        new_classes = torch.unique(labels.long())
        if torch.isin(new_classes, self._seen).any():
            again = new_classes[torch.isin(new_classes, self._seen)].tolist()
            raise ValueError(f"classes {again} are already in the buffer; update takes new classes only")
        self._seen = torch.sort(torch.cat([self._seen, new_classes])).values
        q = self.quota(self._seen.numel())

        ranked = {name: t[ranking] for name, t in cols.items()}
        if self._columns:
            merged = {name: torch.cat([self._columns[name][: self._size], ranked[name]])
                      for name in ranked}
        else:
            merged = ranked
        # Rank within class: old items come before new ones and each class is in priority order,
        # so a stable sort by label keeps every class's priority order.
        lab = merged["labels"].long()
        order = torch.sort(lab, stable=True).indices
        _, counts = torch.unique_consecutive(lab[order], return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(lab.numel(), device=self.device) - torch.repeat_interleave(starts, counts)
        keep = order[rank < q]
        self._columns = {name: t[keep] for name, t in merged.items()}
        self._size = int(keep.numel())

    def reprioritise(self, ranking: torch.Tensor) -> None:
        """Re-order the stored items by a new priority ``ranking`` (indices into the stored items, grouped by
        ascending class, priority order within a class, e.g. :func:`utils.exemplar_selection.rank_exemplars` on
        them); stored items it leaves out are dropped. The next :meth:`update` then truncates each class to the
        prefix of this order: how old classes' exemplars are re-scored with the current model."""
        ranking = torch.as_tensor(ranking).to(self.device).long()
        if ranking.numel() and (int(ranking.min()) < 0 or int(ranking.max()) >= self._size):
            raise ValueError(f"ranking indices must lie in [0, {self._size})")
        if torch.unique(ranking).numel() != ranking.numel():
            raise ValueError("ranking contains repeated indices")
        labels = self._columns["labels"][ranking]
        if labels.numel() > 1 and bool((labels[1:] < labels[:-1]).any()):
            raise ValueError("ranking must keep the items grouped by ascending class")
        self._columns = {name: t[: self._size][ranking] for name, t in self._columns.items()}
        self._size = int(ranking.numel())

    def state_dict(self) -> dict:
        state = self._base_state()
        mode = "per_class" if self.per_class is not None else "buffer_size"
        state.update(type=type(self).__name__, mode=mode,
                     limit=self.per_class if self.per_class is not None else self.buffer_size,
                     seen_classes=self._seen.clone())
        return state

    def load_state_dict(self, state: dict) -> None:
        mode = "per_class" if self.per_class is not None else "buffer_size"
        self._check_state(state, {"mode": mode, "limit": self.per_class if self.per_class is not None
                                  else self.buffer_size})
        self._load_base(state, rows=None)
        self._seen = state["seen_classes"].to(self.device, torch.int64).clone()
