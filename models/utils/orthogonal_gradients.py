"""Orthogonal gradient descent for CLIP fine-tuning (``--orthogonal_gradients N``), the MTIL framework's
``GradientTracker`` as its README describes it, done so that it projects.

- **Tracked parameters** (:func:`tracked_parameters`): the attention, MLP and LayerNorm weights of both towers,
  named from the unwrapped open_clip model (``visual.transformer.resblocks.0.attn.in_proj_weight``, never a
  wrapper's ``module.`` name): a parameter is tracked when a component of its name starts with ``attn``, ``mlp``
  or ``ln`` (the framework's ``attn``/``mlp``/``ln`` + ``weight`` filter: ``in_proj_weight``, ``out_proj.weight``,
  ``c_fc``/``c_proj.weight``, every LayerNorm weight, RN's ``attnpool``), it is not a bias, and it requires grad
  (with ``--lora`` these are the adapters under those modules; frozen weights are skipped).
- **Collection**: N + 1 raw gradients per task per tracked parameter, at N + 1 evenly spaced steps from the task's
  first to its last (:func:`snapshot_steps`; ZSCL-style loops of ``T + 1`` steps take them every ``T // N``, the
  last on the final weights), kept on the CPU.
- **Basis** at the task's end, per parameter (:func:`svd_basis`): the right singular vectors of the n x D
  snapshot matrix (at most 20, the framework's ``q``), the fewest whose squared singular values hold ``--ogd_energy``
  (0.97) of their energy; then (:func:`extend_basis`) its part orthogonal to the earlier tasks' basis is
  re-orthonormalised and appended, so the stored rows stay orthonormal (the framework concatenated the bases as
  they were, which is not a projection).
- **Projection**: every later step, after ``backward()`` and before the optimizer, the CURRENT gradient of each
  tracked parameter loses its part in the stored span, ``g <- g - B^T (B g)`` (the framework projected the last
  collected gradient, under names that never matched). The basis lives on the run's device as one chunk of rows per
  task (chunks are mutually orthogonal, so projecting chunk after chunk is the projection on their union).
- The basis is part of the checkpoint (``state_dict``), so a resumed run projects exactly as the original;
  ``size()`` goes to ``results.json`` (``stats.orthogonal_gradients``). A basis file (``{name: (k, D) tensor}``,
  as the framework's ``grad_<Dataset>.pth``, or ``scripts/convert_grad_to_basis.py``'s output) is read by
  :meth:`OrthogonalGradients.load_basis_file` (``--orthogonal_gradients_path``) and re-orthonormalised.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

from utils.errors import UserError

#: the framework's ``q = min(len(gradients), 20)``: at most this many directions per parameter and task
MAX_RANK = 20
#: a new direction whose part orthogonal to the stored basis is shorter than this (of 1) is dropped
ORTHO_TOL = 1e-4


def is_tracked_name(name: str) -> bool:
    parts = name.split(".")
    if parts[-1] == "bias" or parts[-1].endswith("_bias"):
        return False
    return any(p.startswith(("attn", "mlp", "ln")) for p in parts[:-1])


def tracked_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """``{open_clip name: parameter}`` of what OGD tracks in the unwrapped model (see the module docstring)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad and is_tracked_name(n)}


def snapshot_steps(total: int, n: int) -> set[int]:
    """The N + 1 steps (of ``total``, 0-based) whose gradients are collected: evenly spaced, first and last
    included (all of them when the task has fewer steps)."""
    if total <= 0:
        return set()
    if n <= 0 or total <= n + 1:
        return set(range(total))
    return {round(i * (total - 1) / n) for i in range(n + 1)}


def svd_basis(snapshots: Tensor, energy: float, max_rank: int = MAX_RANK) -> Tensor:
    """(k, D) orthonormal rows: the top right singular vectors of ``snapshots`` (n, D) holding ``energy`` of the
    squared singular values of the top ``min(n, max_rank)``; (0, D) for an all-zero matrix."""
    g = snapshots.double()
    _, s, vh = torch.linalg.svd(g, full_matrices=False)
    q = min(g.shape[0], max_rank)
    s, vh = s[:q], vh[:q]
    power = s.pow(2)
    total = power.sum()
    if total <= 0:
        return snapshots.new_zeros(0, snapshots.shape[1])
    cumulative = torch.cumsum(power, 0) / total
    k = int((cumulative < energy - 1e-12).sum().item()) + 1
    return vh[:min(k, q)].to(snapshots.dtype).contiguous()


def extend_basis(chunks: list[Tensor], new: Tensor, tol: float = ORTHO_TOL) -> Tensor:
    """The rows to append to ``chunks`` (mutually orthonormal rows) so that together they span ``new``'s rows too,
    orthonormal: ``new``'s part orthogonal to the chunks (Gram-Schmidt, twice), re-orthonormalised by an SVD,
    keeping directions longer than ``tol``."""
    r = new.double()
    for _ in range(2):
        for c in chunks:
            c = c.to(r.device, torch.float64)
            r = r - (r @ c.T) @ c
    if r.shape[0] == 0:
        return new.new_zeros(0, new.shape[1])
    _, s, vh = torch.linalg.svd(r, full_matrices=False)
    return vh[s > tol].to(new.dtype).contiguous()


class OrthogonalGradients:
    """Per-parameter gradient snapshots and orthonormal bases, for the parameters of ``model`` that
    :func:`tracked_parameters` names (looked up by name at every step, so replaced parameter objects are found)."""

    def __init__(self, model: nn.Module, n: int, energy: float, device: torch.device | str):
        self.model, self.n, self.energy, self.device = model, n, energy, torch.device(device)
        self.names = sorted(tracked_parameters(model))
        if not self.names:
            raise UserError("--orthogonal_gradients: no trained attention, MLP or LayerNorm weight to track (this "
                            "--train_mode trains none)")
        self.bases: dict[str, list[Tensor]] = {}
        self.rows_per_task: list[int] = []
        self._steps: set[int] = set()
        self._snapshots: dict[str, list[Tensor]] = {}

    # ---- a task ------------------------------------------------------------------------------------
    def begin_task(self, total_steps: int) -> None:
        self._steps = snapshot_steps(total_steps, self.n)
        self._snapshots = {}

    def after_backward(self, step: int) -> None:
        """Collect the raw gradients if ``step`` is a snapshot step, then project them off the stored basis."""
        params = dict(self.model.named_parameters())
        collect = step in self._steps
        for name in self.names:
            p = params[name]
            if p.grad is None:
                continue
            if collect:
                self._snapshots.setdefault(name, []).append(p.grad.detach().flatten().float().cpu())
            if name in self.bases:
                project_(p.grad, self.bases[name])

    def end_task(self) -> None:
        """Turn the task's snapshots into basis rows (appended, orthonormal)."""
        added = 0
        for name in self.names:
            snaps = self._snapshots.get(name)
            if not snaps:
                continue
            rows = svd_basis(torch.stack(snaps), self.energy)
            added += self._append(name, rows)
        self.rows_per_task.append(added)
        self._snapshots = {}

    def _append(self, name: str, rows: Tensor) -> int:
        rows = extend_basis(self.bases.get(name, []), rows.to(self.device))
        if rows.shape[0]:
            self.bases.setdefault(name, []).append(rows.to(self.device))
        return rows.shape[0]

    # ---- files, checkpoints, size --------------------------------------------------------------------
    def load_basis(self, basis: Mapping[str, Tensor], source: str) -> None:
        """Add a basis ``{name: (k, D) or (D,)}`` (re-orthonormalised); names and sizes must be tracked ones."""
        params = dict(self.model.named_parameters())
        unknown = [n for n in basis if n not in self.names]
        if unknown:
            raise UserError(f"{source}: {len(unknown)} name(s) are not parameters OGD tracks here "
                            f"({', '.join(unknown[:3])}); tracked: {', '.join(self.names[:3])}, ...")
        for name, rows in basis.items():
            rows = rows.reshape(-1, rows.shape[-1]) if rows.ndim else rows.reshape(1, 1)
            if rows.shape[1] != params[name].numel():
                raise UserError(f"{source}: {name} has rows of {rows.shape[1]} values, the parameter "
                                f"{params[name].numel()}")
            self._append(name, rows.float())

    def load_basis_file(self, path: str | Path) -> None:
        from utils.atomic import load_torch
        if not Path(path).is_file():
            raise UserError(f"--orthogonal_gradients_path: no such file '{path}'")
        try:
            basis = load_torch(path, map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - not a torch file
            raise UserError(f"--orthogonal_gradients_path {path}: not a basis file torch can read "
                            f"({type(exc).__name__})") from None
        if not isinstance(basis, Mapping) or not all(isinstance(v, Tensor) for v in basis.values()):
            raise UserError(f"--orthogonal_gradients_path {path}: expected a mapping of parameter names to (k, D) "
                            f"tensors (scripts/convert_grad_to_basis.py writes one)")
        self.load_basis(basis, f"--orthogonal_gradients_path {path}")

    def basis(self) -> dict[str, Tensor]:
        """``{name: (k, D)}`` on the CPU: the file format of ``--orthogonal_gradients_path``."""
        return {n: torch.cat(c).cpu() for n, c in self.bases.items()}

    def state_dict(self) -> dict:
        return {"bases": {n: [c.cpu() for c in chunks] for n, chunks in self.bases.items()},
                "rows_per_task": list(self.rows_per_task)}

    def load_state_dict(self, state: Mapping) -> None:
        self.bases = {n: [c.to(self.device) for c in chunks] for n, chunks in state["bases"].items()}
        self.rows_per_task = [int(r) for r in state["rows_per_task"]]

    def size(self) -> dict:
        rows = {n: sum(c.shape[0] for c in chunks) for n, chunks in self.bases.items()}
        floats = sum(sum(c.numel() for c in chunks) for chunks in self.bases.values())
        return {"tracked_parameters": len(self.names),
                "tracked_values": sum(dict(self.model.named_parameters())[n].numel() for n in self.names),
                "rows_per_task": list(self.rows_per_task), "rows": sum(rows.values()),
                "max_rows_per_parameter": max(rows.values(), default=0), "floats": floats,
                "megabytes": round(floats * 4 / 2 ** 20, 2)}


def project_(grad: Tensor, chunks: list[Tensor]) -> None:
    """``grad <- grad - B^T (B grad)`` in place, chunk after chunk of mutually orthonormal rows ``B``."""
    g = grad.reshape(-1).float()
    for c in chunks:
        g = g - c.T @ (c @ g)
    grad.copy_(g.view_as(grad))
