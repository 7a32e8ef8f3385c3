r"""Exemplar selectors: rank each class's candidates by how much they deserve a place in memory.

:func:`rank_exemplars` returns a LongTensor of indices into the N candidates, grouped by class
(ascending label) and, within a class, in priority order: the first ``k`` of a class are the ones to
keep. Feed it straight to :meth:`utils.buffer.ClassBalancedBuffer.update`.

Inputs: ``features`` (N, D) image embeddings; ``logits`` (N, C) from a deterministic model;
``mc_logits`` (T, N, C) Monte-Carlo samples *per image* (sample t of image n is ``mc_logits[t, n]``)
from a probabilistic model. Score-based selectors use ``mc_logits`` when given, else ``logits`` as
T = 1. Below, :math:`p_t = \mathrm{softmax}(\ell_t)` for sample t of one image, :math:`\bar p` is
:math:`\frac1T\sum_t p_t`, :math:`\bar\ell = \frac1T\sum_t \ell_t` the mean logits, and y is the image's label
(an index into the C logits).

=============  ===============================================================  ===============
selector       score (per image)                                                default keeps
=============  ===============================================================  ===============
random         seeded random permutation within each class                      (n/a)
herding        iCaRL greedy herding on L2-normalised ``features``, or on the    (n/a)
               L2-normalised mean logits :math:`\bar\ell` (``herding_on``)
entropy        :math:`H(\mathrm{softmax}(\bar\ell))` (CLAP4CLIP's input)          high (uncertain)
energy         :math:`E = -\frac1T \sum_t \mathrm{logsumexp}_c\, \ell_{t,c}`     high (uncertain)
variance       :math:`V = \sum_c \mathrm{Var}_t(p_{t,c})` (unbiased, T >= 2)    LOW (certain)
distance       :math:`d = \frac1T \sum_t \ell_{t,y}` (true-class logit)         low (boundary)
var_entropy    :math:`\sqrt{V \cdot H(\bar p)}`, H >= 0 (T >= 2)                  high
=============  ===============================================================  ===============

``keep="high"`` / ``"low"`` overrides the direction of a score-based selector (``random`` and
``herding`` have none). The defaults follow CLAP4CLIP's implementation. Note that ``variance``
keeps the *most certain* images by default, the opposite direction to ``entropy``/``energy``.

Differences from CLAP4CLIP, deliberately:

* ``random`` is a seeded random permutation within each class; CLAP4CLIP kept the first k of each
  class in dataset order.
* Monte-Carlo samples are per image by construction. CLAP4CLIP's energy/variance/var_entropy
  reshaped (T, B, C) outputs that had been extended along T into (N, T, C), which mixed samples of
  different images into one image's statistics.
* ``var_entropy`` uses the entropy as a positive quantity. CLAP4CLIP took scipy's ``gmean`` of the variance
  and :math:`\sum_c \bar p_c \log \bar p_c \le 0`, which is NaN for every image; numpy's ``argsort`` of an
  all-NaN array is then not the dataset order but an arbitrary permutation (its introsort reorders equal
  keys: with numpy 2.4, identity for up to 16 candidates, and for 500 it starts 328, 343, 342, ...), so the
  original kept an arbitrary, deterministic k per class.

As CLAP4CLIP (``dataset/exemplars_selection.py``): ``entropy`` scores the softmax of the Monte-Carlo mean
logits (what its ``model(x, test=True)`` returns), and its ``icarl`` herding ran on the L2-normalised mean
logits, not on image features (``herding_on="logits"``; the methods whose reference is CLAP4CLIP use it).

Ties are broken deterministically: a stable sort keeps candidate order among equal scores, and
herding takes the first of equally good candidates.
"""
from __future__ import annotations

import torch

from utils.errors import UserError, unknown_name_error

__all__ = ["SELECTORS", "KEEP_MODES", "rank_exemplars"]

SELECTORS: tuple[str, ...] = ("random", "herding", "entropy", "variance", "distance", "var_entropy", "energy")
KEEP_MODES: tuple[str, ...] = ("default", "high", "low")

# Score-based selectors and whether, by default, they keep the highest scores.
_KEEP_HIGH = {"entropy": True, "energy": True, "variance": False, "distance": False, "var_entropy": True}
_NEEDS_MC = {"variance", "var_entropy"}


def rank_exemplars(selector: str, labels: torch.Tensor, *, features: torch.Tensor | None = None,
                   logits: torch.Tensor | None = None, mc_logits: torch.Tensor | None = None,
                   keep: str = "default", generator: torch.Generator | None = None,
                   k: int | None = None, herding_on: str = "features") -> torch.Tensor:
    """Indices into the candidates, grouped by class (ascending), priority order within a class.

    ``k`` limits how many per class need ranking: ``herding`` then returns only its first ``k``
    picks per class; the other selectors always rank all candidates. ``random`` needs
    ``generator``; ``herding`` needs ``features`` (``herding_on="logits"``: ``logits``, or ``mc_logits`` whose
    mean over samples is taken); the others need ``logits`` or ``mc_logits``
    (``variance`` and ``var_entropy`` need ``mc_logits`` with T >= 2). The result is on
    ``labels.device``.
    """
    if selector not in SELECTORS:
        raise unknown_name_error("exemplar selector", selector, SELECTORS)
    if keep not in KEEP_MODES:
        raise unknown_name_error("keep mode", keep, KEEP_MODES)
    if selector in ("random", "herding") and keep != "default":
        raise UserError(f"keep='{keep}' has no meaning for the '{selector}' selector; it applies to "
                        f"the score-based selectors ({', '.join(_KEEP_HIGH)})")
    if k is not None and k < 0:
        raise ValueError(f"k must be non-negative, got {k}")
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be a 1-D integer tensor, got {labels.dtype} {tuple(labels.shape)}")
    labels = labels.long()
    n = labels.numel()

    if selector == "random":
        if generator is None:
            raise UserError("the 'random' exemplar selector needs a seeded torch.Generator (generator=)")
        # Random keys sorted within each class = a uniform random permutation per class. (CLAP4CLIP
        # kept the first k of each class in dataset order: not random at all.)
        keys = torch.rand(n, generator=generator, device=generator.device).to(labels.device)
        return _group_by_class(labels, torch.argsort(keys, stable=True))
    if selector == "herding":
        if herding_on not in ("features", "logits"):
            raise unknown_name_error("herding input", herding_on, ("features", "logits"))
        if herding_on == "logits":
            points = logits if logits is not None else None if mc_logits is None else mc_logits.float().mean(0)
            if points is None:
                raise UserError("herding on logits needs logits (N, C) or mc_logits (T, N, C)")
            return _herding(labels, _check_rows("logits", points, n, 2).to(labels.device), k)
        if features is None:
            raise UserError("the 'herding' exemplar selector needs features (N, D image embeddings)")
        return _herding(labels, _check_rows("features", features, n, 2).to(labels.device), k)

    score = _score(selector, labels, logits, mc_logits)
    high = _KEEP_HIGH[selector] if keep == "default" else keep == "high"
    order = torch.sort(score, descending=high, stable=True).indices
    return _group_by_class(labels, order)


def _check_rows(name: str, t: torch.Tensor, n: int, dim: int, row_dim: int = 0) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.dim() != dim or t.shape[row_dim] != n:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name} must be a {dim}-D tensor with {n} candidates along dim {row_dim}, got {shape}")
    return t


def _group_by_class(labels: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Stable-sort a priority ``order`` of all candidates by class, keeping priority within a class."""
    order = order.to(labels.device)
    by_class = torch.sort(labels[order], stable=True).indices
    return order[by_class]


def _score(selector: str, labels: torch.Tensor, logits: torch.Tensor | None,
           mc_logits: torch.Tensor | None) -> torch.Tensor:
    n = labels.numel()
    if mc_logits is not None:
        lg = _check_rows("mc_logits", mc_logits, n, 3, row_dim=1)
    elif logits is not None:
        lg = _check_rows("logits", logits, n, 2).unsqueeze(0)
    else:
        raise UserError(f"the '{selector}' exemplar selector needs logits (N, C) or mc_logits (T, N, C)")
    if selector in _NEEDS_MC and (mc_logits is None or lg.shape[0] < 2):
        got = "logits only" if mc_logits is None else f"mc_logits with T={lg.shape[0]}"
        raise UserError(f"the '{selector}' exemplar selector needs mc_logits (T, N, C) with T >= 2 "
                        f"Monte-Carlo samples per image (a probabilistic model); got {got}")
    lg = lg.to(labels.device)
    if lg.dtype not in (torch.float32, torch.float64):
        lg = lg.float()

    if selector == "energy":
        return -torch.logsumexp(lg, dim=-1).mean(0)
    if selector == "distance":
        if n and (int(labels.min()) < 0 or int(labels.max()) >= lg.shape[-1]):
            raise ValueError(f"'distance' needs labels in [0, {lg.shape[-1]}) to index the logits")
        return lg[:, torch.arange(n, device=lg.device), labels].mean(0)

    if selector == "entropy":                              # H(softmax(mean logits)); entr(0) = 0, no NaN
        return torch.special.entr(torch.softmax(lg.mean(0), dim=-1)).sum(-1)
    probs = torch.softmax(lg, dim=-1)                      # (T, N, C)
    entropy = torch.special.entr(probs.mean(0)).sum(-1)    # >= 0, of the mean probabilities (as CLAP4CLIP's)
    variance = probs.var(dim=0, correction=1).sum(-1)
    if selector == "variance":
        return variance
    # var_entropy: both factors are >= 0; clamp guards rounding below zero before the sqrt.
    return torch.sqrt(variance.clamp_min(0) * entropy.clamp_min(0))


def _herding(labels: torch.Tensor, features: torch.Tensor, k: int | None) -> torch.Tensor:
    """iCaRL herding, all classes at once (padded to the largest class); loop over steps only.

    At step s (0-based) each class picks the unselected candidate f minimising
    ``|| mu - (S + f) / (s + 1) ||`` where mu is the class mean of the normalised features and S the
    sum of those already selected; i.e. minimising ``|f|^2 / (s + 1) - 2 f . (mu - S / (s + 1))``.
    """
    device = labels.device
    n = labels.numel()
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    feats = torch.nn.functional.normalize(features.to(torch.float64), dim=1)
    order = torch.sort(labels, stable=True).indices
    classes, counts = torch.unique_consecutive(labels[order], return_counts=True)
    n_cls, width = classes.numel(), int(counts.max())
    starts = torch.cumsum(counts, 0) - counts
    row = torch.repeat_interleave(torch.arange(n_cls, device=device), counts)
    col = torch.arange(n, device=device) - starts[row]

    padded = torch.zeros(n_cls, width, feats.shape[1], dtype=feats.dtype, device=device)
    padded[row, col] = feats[order]
    index = torch.full((n_cls, width), -1, dtype=torch.int64, device=device)
    index[row, col] = order
    available = torch.zeros(n_cls, width, dtype=torch.bool, device=device)
    available[row, col] = True

    mean = padded.sum(1) / counts.unsqueeze(1).to(feats.dtype)           # (n_cls, D)
    sq_norm = (padded * padded).sum(-1)                                  # (n_cls, width)
    running = torch.zeros_like(mean)
    steps = width if k is None else min(k, width)
    picks = torch.full((n_cls, steps), -1, dtype=torch.int64, device=device)
    arange_cls = torch.arange(n_cls, device=device)
    for s in range(steps):
        target = mean - running / (s + 1)
        cost = sq_norm / (s + 1) - 2 * torch.bmm(padded, target.unsqueeze(2)).squeeze(2)
        cost = cost.masked_fill(~available, float("inf"))
        best = torch.argmin(cost, dim=1)                                 # first of equal minima
        active = counts > s
        picks[:, s] = torch.where(active, best, torch.full_like(best, -1))
        running = running + padded[arange_cls, best] * active.unsqueeze(1).to(feats.dtype)
        available[arange_cls[active], best[active]] = False

    valid = picks >= 0
    return index[arange_cls.unsqueeze(1).expand_as(picks)[valid], picks[valid]]
