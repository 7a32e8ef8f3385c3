"""Weight-space operations of the ZSCL family, always **by name**: WiSE-FT merges, the weight ensemble (WE and its
WiSE variant), the moving-average pull toward an anchor, and the L2 anchor penalty.

A *state* is a ``{name: tensor}`` mapping, as ``nn.Module.state_dict()`` gives: parameters **and** persistent
buffers (BatchNorm running statistics, CLIP's attention mask). Every operation pairs tensors by name and refuses
models whose names or shapes differ (:func:`check_compatible`, a ``UserError``), so a LoRA-wrapped copy, a head
of another size or a reordered module can never be merged element by element with the wrong tensor, as ZSCL's
``zip(model.parameters(), other.parameters())`` would.

The arithmetic is ZSCL's (``mtil/src/models/helpers.py``), expression for expression:

- WiSE-FT merge: ``target * alpha + ref * (1 - alpha)``;
- WE update: ``(mean * n + theta) / (n + 1)`` with ``n`` already counting this snapshot, so after ``k`` updates
  the mean is the uniform mean of the starting weights and the ``k`` snapshots;
- WE-WiSE update: the WE update, then ``* alpha + fixed * (1 - alpha)``;
- moving-average pull: ``theta * decay + anchor * (1 - decay)`` on the *training* weights;
- L2: ``sum over parameters of ||theta - ref||^2`` (sum reduction, no 1/2).

Two rules of their own: where both sides hold the same value the result is that value exactly (so a ``-inf``
attention mask stays ``-inf`` instead of becoming NaN, and untouched weights stay bit-identical), and tensors that
are not floating point (``num_batches_tracked``) keep the live model's value.
"""
from __future__ import annotations

from typing import Mapping, Union

import torch
from torch import Tensor, nn

from utils.errors import UserError

State = Mapping[str, Tensor]
ModuleOrState = Union[nn.Module, State]


def _state(source: ModuleOrState) -> State:
    """The named tensors of a module (its live parameters and persistent buffers), of a weight view (an object
    with ``weight_state()``, e.g. a LoRA model's effective weights, ``models/utils/lora.py``), or a state as given."""
    if isinstance(source, nn.Module):
        return source.state_dict(keep_vars=True)
    return source.weight_state() if hasattr(source, "weight_state") else source


def snapshot(source: ModuleOrState, device: torch.device | str | None = None) -> dict[str, Tensor]:
    """A detached copy of every named tensor (on ``device``, default: where each tensor is)."""
    return {name: t.detach().to(device, copy=True) if device is not None else t.detach().clone()
            for name, t in _state(source).items()}


def _listed(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_compatible(state: ModuleOrState, ref: ModuleOrState, what: str = "weights") -> None:
    """Raise ``UserError`` unless ``state`` and ``ref`` hold exactly the same names with the same shapes."""
    a, b = _state(state), _state(ref)
    missing = [n for n in a if n not in b]
    extra = [n for n in b if n not in a]
    shapes = [f"{n} {tuple(a[n].shape)} vs {tuple(b[n].shape)}" for n in a if n in b and a[n].shape != b[n].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} name(s) missing from the reference ({_listed(missing)})")
    if extra:
        problems.append(f"{len(extra)} name(s) only in the reference ({_listed(extra)})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es) ({_listed(shapes)})")
    if problems:
        raise UserError(f"cannot combine {what} by name: the models differ: {'; '.join(problems)}")


def _blend(a: Tensor, b: Tensor, wa: float, wb: float) -> Tensor:
    """``a * wa + b * wb``, and exactly ``a`` where ``a == b``."""
    b = b.to(a.device)
    return torch.where(a == b, a, a * wa + b * wb)


@torch.no_grad()
def merge_by_name(target_state: ModuleOrState, ref_state: ModuleOrState, alpha: float) -> dict[str, Tensor]:
    """New tensors ``alpha * target + (1 - alpha) * ref`` for every name (WiSE-FT's interpolation); non-floating
    tensors are the target's."""
    target, ref = _state(target_state), _state(ref_state)
    check_compatible(target, ref)
    return {name: _blend(t.detach(), ref[name].detach(), alpha, 1 - alpha) if t.is_floating_point()
            else t.detach().clone() for name, t in target.items()}


@torch.no_grad()
def load_by_name(module: nn.Module, state: ModuleOrState) -> None:
    """Copy ``state`` into ``module``'s parameters and buffers in place, by name (same names and shapes only)."""
    live, new = _state(module), _state(state)
    check_compatible(live, new)
    if hasattr(module, "load_weight_state"):            # a weight view writes its own way
        module.load_weight_state(new)
        return
    values = {name: new[name].detach() for name in live}     # read everything before writing (tied weights)
    for name, t in live.items():
        t.copy_(values[name])


def merge_into(module: nn.Module, ref_state: ModuleOrState, alpha: float) -> None:
    """``module <- alpha * module + (1 - alpha) * ref``, in place, by name."""
    load_by_name(module, merge_by_name(module, ref_state, alpha))


class WeightEnsemble:
    """ZSCL's weight ensemble (WE, ``--we``): a uniform running mean of the weights, starting as a copy of the
    starting weights; every :meth:`update` adds one snapshot of ``model``. With ``fixed`` and ``fixed_alpha``
    it is ZSCL's WE-WiSE (``--we_wise``): after each update the mean is pulled toward the fixed weights,
    ``mean <- fixed_alpha * mean + (1 - fixed_alpha) * fixed``, so it is an exponential, not uniform, mix.
    """

    def __init__(self, start: ModuleOrState, fixed: ModuleOrState | None = None, fixed_alpha: float | None = None):
        if (fixed is None) != (fixed_alpha is None):
            raise ValueError("WeightEnsemble: pass both fixed and fixed_alpha, or neither")
        self.mean = snapshot(start)
        self.fixed = None if fixed is None else snapshot(fixed)
        if self.fixed is not None:
            check_compatible(self.mean, self.fixed)
        self.fixed_alpha = fixed_alpha
        self.n = 0                  # snapshots averaged so far (the mean has n + 1 members)

    @torch.no_grad()
    def update(self, model: ModuleOrState) -> None:
        live = _state(model)
        check_compatible(live, self.mean)
        self.n += 1
        n = self.n
        for name, m in self.mean.items():
            theta = live[name].detach()
            if not m.is_floating_point():
                m.copy_(theta)
                continue
            theta = theta.to(m.device)
            avg = torch.where(m == theta, m, (m * n + theta) / (n + 1))
            if self.fixed is not None:
                avg = _blend(avg, self.fixed[name], self.fixed_alpha, 1 - self.fixed_alpha)
            m.copy_(avg)

    def apply_to(self, model: nn.Module) -> None:
        """Make ``model``'s weights the ensemble's."""
        load_by_name(model, self.mean)

    def state_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "fixed": self.fixed, "fixed_alpha": self.fixed_alpha}

    def load_state_dict(self, state: Mapping) -> None:
        check_compatible(state["mean"], self.mean)
        self.n, self.fixed_alpha = int(state["n"]), state["fixed_alpha"]
        self.mean = snapshot(state["mean"])
        self.fixed = None if state["fixed"] is None else snapshot(state["fixed"])


class AnchorPull:
    """ZSCL's ``--moving_avg``: every call pulls the *training* weights toward an anchor,
    ``theta <- decay * theta + (1 - decay) * anchor``. This is not an EMA teacher (where a separate copy follows
    the training weights and the training weights never move): here the trained model itself is moved, and it is
    what gets saved. With ``follow`` (ZSCL's ``--mv_avg_model t``) the anchor becomes, after each pull, the
    training weights as they were just before it; otherwise the anchor is fixed (the task's starting weights for
    ``n``, zero-shot CLIP for ``zeroshot``)."""

    def __init__(self, anchor: ModuleOrState, decay: float, follow: bool = False):
        self.anchor = snapshot(anchor)
        self.decay = decay
        self.follow = follow

    def pull(self, model: nn.Module) -> None:
        before = snapshot(model) if self.follow else None
        merge_into(model, self.anchor, self.decay)
        if before is not None:
            self.anchor = before


def l2_penalty(model_or_named_params: nn.Module | Mapping[str, Tensor], ref_state: ModuleOrState) -> Tensor:
    """``sum ||theta - ref||^2`` over the parameters (with their gradient path), each paired with the reference
    tensor of the same name; a module contributes its trainable parameters (the others are constants, whose
    distance to their own start is 0). Raises ``UserError`` for a name the reference lacks or a shape mismatch."""
    if isinstance(model_or_named_params, nn.Module):
        params = {n: p for n, p in model_or_named_params.named_parameters() if p.requires_grad}
    else:
        params = dict(model_or_named_params)
    ref = _state(ref_state)
    check_compatible(params, {n: ref[n] for n in params if n in ref}, "parameters for the L2 penalty")
    if not params:
        return torch.zeros(())
    terms = [(p - ref[n].detach().to(p.device)).pow(2).sum() for n, p in params.items()]
    return torch.stack(terms).sum()
