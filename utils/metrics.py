"""Continual-learning metrics: pure functions, numpy in, numbers out (no model, no files).

``A[t, k]`` is the accuracy (percent) on task ``k`` after training task ``t``; entries not evaluated
are NaN. Only the first ``T`` rows (the tasks trained so far) are used, with ``T = A.shape[0]``.
With ``--eval_future`` the upper triangle (``k > t``) holds zero-shot accuracies on tasks not trained yet.

Every percentage-valued metric (accuracies, ECE, AUROC, AUPR, FPR) is returned in percent.
The sections: accuracy-matrix metrics, transfer to future tasks (MTIL and CGIL/mammoth, which differ),
top-k accuracy, calibration, novel-data detection.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _rows(A: np.ndarray) -> np.ndarray:
    A = np.asarray(A, dtype=float)
    if A.ndim != 2 or A.shape[0] == 0:
        raise ValueError("accuracy matrix must be 2-D with at least one row")
    return A


#: The two conventions for a step's accuracy over several tasks; results name the one they use.
TASK_MEAN = "mean of per-task accuracies"
SAMPLE_WEIGHTED = "sample-weighted (correct / total over the seen tasks' test images)"


def step_accuracies(A: np.ndarray, sizes: np.ndarray | None = None) -> np.ndarray:
    """Accuracy after each step t over the tasks seen so far.

    Default (``sizes=None``, :data:`TASK_MEAN`): ``mean_{k<=t} A[t, k]``, each task weighs the same,
    as mammoth and CLAP4CLIP report. With ``sizes[k]`` = task k's number of test images
    (:data:`SAMPLE_WEIGHTED`): ``sum_{k<=t} n_k A[t, k] / sum_{k<=t} n_k``, i.e. correct / total.
    The two agree when every task has as many test images."""
    A = _rows(A)
    T = A.shape[0]
    mask = np.tril(np.ones((T, A.shape[1]), dtype=bool))[:, :A.shape[1]]
    if sizes is None:
        return np.nanmean(np.where(mask, A[:T], np.nan), axis=1)
    weights = np.broadcast_to(np.asarray(sizes, dtype=float), A.shape)
    used = mask & ~np.isnan(A)
    return np.where(used, A * weights, 0.0).sum(1) / np.where(used, weights, 0.0).sum(1)


def average_incremental_accuracy(A: np.ndarray, sizes: np.ndarray | None = None) -> float:
    """``(1/T) sum_t acc_t`` with ``acc_t`` from :func:`step_accuracies` (default: ``(1/(t+1)) sum_{k<=t} A[t, k]``)."""
    return float(np.mean(step_accuracies(A, sizes)))


def last_accuracy(A: np.ndarray, sizes: np.ndarray | None = None) -> float:
    """``acc_{T-1}`` (default: ``(1/T) sum_{k<T} A[T-1, k]``): accuracy on all seen tasks after the last step."""
    return float(step_accuracies(A, sizes)[-1])


def backward_transfer(A: np.ndarray) -> float:
    """``(1/(T-1)) sum_{k<T-1} (A[T-1, k] - A[k, k])``; negative means forgetting. NaN for T = 1."""
    A = _rows(A)
    T = A.shape[0]
    if T < 2:
        return float("nan")
    k = np.arange(T - 1)
    return float(np.mean(A[T - 1, k] - A[k, k]))


def forgetting(A: np.ndarray) -> float:
    """``(1/(T-1)) sum_{k<T-1} (max_{k<=t<T-1} A[t, k] - A[T-1, k])``: the drop from the best
    earlier accuracy on each old task to the final one. NaN for T = 1."""
    A = _rows(A)
    T = A.shape[0]
    if T < 2:
        return float("nan")
    k = np.arange(T - 1)
    earlier = np.where(np.tril(np.ones((T - 1, T - 1), dtype=bool)), A[:T - 1, :T - 1], -np.inf)
    return float(np.mean(earlier.max(axis=0)[k] - A[T - 1, k]))


def diagonal_forgetting(A: np.ndarray) -> float:
    """``(1/(T-1)) sum_{k<T-1} (A[k, k] - A[T-1, k])``: the drop from each task's accuracy right after its own
    training to the final one (:func:`forgetting` takes the best earlier accuracy instead). NaN for T = 1."""
    A = _rows(A)
    T = min(A.shape)
    if T < 2:
        return float("nan")
    k = np.arange(T - 1)
    return float(np.mean(A[k, k] - A[T - 1, k]))


def interference(A: np.ndarray) -> np.ndarray:
    """``D[t, d] = A[t, d] - A[t-1, d]`` for ``d < t`` (NaN elsewhere): what training task t did to task d."""
    A = _rows(A)
    D = np.full(A.shape, np.nan)
    for t in range(1, A.shape[0]):
        D[t, :t] = A[t, :t] - A[t - 1, :t]
    return D


def summary(A: np.ndarray) -> dict[str, float]:
    """The headline numbers of one accuracy matrix."""
    return {"avg_accuracy": average_incremental_accuracy(A), "last_accuracy": last_accuracy(A),
            "bwt": backward_transfer(A), "forgetting": forgetting(A)}


# ---- transfer to tasks not trained yet (needs the upper triangle: --eval_future) -----------------

def forward_transfer(A: np.ndarray, reference: np.ndarray) -> float:
    """``(1/(K-1)) sum_{k=1}^{K-1} (A[k-1, k] - r[k])`` (GEM): accuracy on task k just before training it,
    minus the reference ``r[k]``, here the model's zero-shot accuracy before any training.
    Only tasks whose row ``k-1`` exists count; NaN if an entry is missing (no ``--eval_future``)."""
    A = _rows(A)
    r = np.asarray(reference, dtype=float)
    k = np.arange(1, min(A.shape[0] + 1, A.shape[1]))
    if k.size == 0:
        return float("nan")
    return float(np.mean(A[k - 1, k] - r[k]))


def mtil_summary(A: np.ndarray) -> dict[str, float]:
    """ZSCL's MTIL metrics (``results.ipynb``; also MoE-Adapters), column-wise:

    - ``transfer`` = ``mean_{d>=1} [ mean_{t<d} A[t, d] ]``: each dataset's accuracy before it is trained,
      averaged over the steps first, then over datasets (the first dataset has no entry);
    - ``avg`` = mean of all entries ``A[t, d]``;
    - ``last`` = ``mean_d A[T-1, d]``, the last row over every dataset.

    Needs the whole matrix (``--eval_future``): a missing entry makes the number that uses it NaN.
    Differs from :func:`future_transfer`, which averages rows first."""
    A = _rows(A)
    T, K = A.shape
    before = np.triu(np.ones((T, K), dtype=bool), k=1)            # t < d
    counts = before.sum(0)
    cols = np.where(before, A, 0.0).sum(0)[counts > 0] / counts[counts > 0]
    return {"transfer": float(np.mean(cols)) if cols.size else float("nan"),
            "avg": float(np.mean(A)), "last": float(np.mean(A[-1]))}


def future_transfer(A: np.ndarray) -> float:
    """CGIL's transfer as mammoth logs it (``Transfer Metrics - AVG Transfer``), row-wise:
    ``(1/(T-1)) sum_{t=0}^{T-2} [ (1/(K-1-t)) sum_{j>t} A[t, j] ]``, the mean over steps of the mean
    accuracy on the tasks not trained yet. Weighs steps equally, where :func:`mtil_summary`'s
    ``transfer`` weighs datasets equally; the two differ unless the upper triangle is constant."""
    A = _rows(A)
    T, K = A.shape
    rows = min(T, K - 1)
    if rows <= 0:
        return float("nan")
    future = np.triu(np.ones((rows, K), dtype=bool), k=1)
    return float(np.mean(np.where(future, A[:rows], 0.0).sum(1) / future.sum(1)))


# ---- top-k accuracy ------------------------------------------------------------------------------

def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """``100 * mean_i [ #{c : s[i, c] > s[i, y_i]} < k ]``: percent of samples whose true class is among
    the k highest scores (a tie with the true class counts in its favour). NaN with fewer than k classes."""
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels, dtype=int)
    if scores.shape[1] < k:
        return float("nan")
    true = np.take_along_axis(scores, labels[:, None], axis=1)
    return float(100.0 * np.mean((scores > true).sum(1) < k))


# ---- calibration ---------------------------------------------------------------------------------

def calibration_bin_edges(n_bins: int = 15) -> np.ndarray:
    """Edges (percent) of the ``n_bins + 1`` bins of :func:`reliability_diagram`: ``n_bins`` equal-width bins,
    then the degenerate bin [100, 100] of confidence exactly 1."""
    return np.r_[np.linspace(0.0, 100.0, n_bins + 1), 100.0]


def reliability_diagram(confidences: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> dict[str, np.ndarray]:
    """The data of a reliability diagram over a whole test set, binned as torchmetrics'
    ``calibration_error`` (what CLAP4CLIP reported): ``n_bins`` equal-width confidence bins ``[b/n, (b+1)/n)``,
    plus one more for a confidence of exactly 1 (``bucketize(right=True)`` puts it past the last edge; a
    saturated softmax lands there), each with its sample count, accuracy and mean confidence (percent; NaN
    for empty bins): ``n_bins + 1`` entries. ``confidences`` in [0, 1]."""
    conf = np.asarray(confidences, dtype=float).ravel()
    hit = np.asarray(correct, dtype=float).ravel()
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins)
    counts = np.bincount(bins, minlength=n_bins + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = 100.0 * np.bincount(bins, hit, minlength=n_bins + 1) / counts
        confidence = 100.0 * np.bincount(bins, conf, minlength=n_bins + 1) / counts
    return {"bin_edges": calibration_bin_edges(n_bins), "counts": counts, "accuracy": accuracy,
            "confidence": confidence}


def expected_calibration_error(confidences: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """``ECE = sum_b (n_b / N) |acc_b - conf_b|`` (L1, percent) over the bins of :func:`reliability_diagram`,
    on the whole test set at once: torchmetrics' ``multiclass_calibration_error(n_bins=15, norm='l1')`` of the
    same confidences (tested against it). CLAP4CLIP printed the mean of per-batch values
    (:func:`mean_batch_ece`, ``--ece_per_batch 1``), which is biased upward for small batches."""
    return ece_from_diagram(reliability_diagram(confidences, correct, n_bins))


def mean_batch_ece(confidences: np.ndarray, correct: np.ndarray, batch_sizes: Sequence[int], n_bins: int = 15
                   ) -> float:
    """CLAP4CLIP's ECE: the mean over evaluation batches (consecutive ``batch_sizes`` items) of each batch's
    :func:`expected_calibration_error` (percent)."""
    conf, hit = np.asarray(confidences, dtype=float).ravel(), np.asarray(correct, dtype=float).ravel()
    bounds = np.cumsum([0, *batch_sizes])
    if bounds[-1] != conf.size:
        raise ValueError(f"batch sizes add up to {bounds[-1]}, not to the {conf.size} confidences")
    values = [expected_calibration_error(conf[a:b], hit[a:b], n_bins) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    return float(np.mean(values)) if values else float("nan")


def ece_from_diagram(diagram: dict[str, np.ndarray]) -> float:
    """ECE from a reliability diagram's bins (empty bins weigh nothing), e.g. bins pooled over runs."""
    counts = np.asarray(diagram["counts"], dtype=float)
    gap = np.abs(np.asarray(diagram["accuracy"], dtype=float) - np.asarray(diagram["confidence"], dtype=float))
    total = counts.sum()
    return float(np.sum(np.where(counts > 0, counts * gap, 0.0)) / total) if total else float("nan")


# ---- novel-data detection ------------------------------------------------------------------------
# CLAP4CLIP's post-hoc setting: after step t, in-distribution = test images of tasks 0..t, novel = test
# images of the tasks not trained yet, both scored over the seen classes only. Every score is oriented so
# that higher means "in-distribution", and in-distribution is the positive class.

def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def energy_score(logits: np.ndarray) -> np.ndarray:
    """``logsumexp_c f_c(x)``, the negative free energy (Liu et al. 2020; CLAP4CLIP's score)."""
    logits = np.asarray(logits, dtype=float)
    m = logits.max(-1)
    return m + np.log(np.exp(logits - m[..., None]).sum(-1))


def max_softmax_score(logits: np.ndarray) -> np.ndarray:
    """``max_c softmax(f(x))_c`` (Hendrycks & Gimpel 2017)."""
    return _softmax(np.asarray(logits, dtype=float)).max(-1)


def variance_score(samples: np.ndarray) -> np.ndarray:
    """``-sum_c Var_s softmax(f_s(x))_c`` over Monte-Carlo samples ``(S, B, C)``: the negative predictive
    variance, so that confident (low-variance) inputs score high."""
    return -_softmax(np.asarray(samples, dtype=float)).var(axis=0).sum(-1)


def novelty_scores(logits: np.ndarray, samples: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-image scores: ``energy`` and ``max_softmax`` from the logits, ``variance`` when the method
    gives Monte-Carlo samples (``ContinualModel.forward_samples``)."""
    out = {"energy": energy_score(logits), "max_softmax": max_softmax_score(logits)}
    if samples is not None:
        out["variance"] = variance_score(samples)
    return out


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    first = np.r_[True, xs[1:] != xs[:-1]]
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], xs.size]
    ranks = np.empty(x.size)
    ranks[order] = ((starts + 1 + ends) / 2.0)[np.cumsum(first) - 1]
    return ranks


def auroc(in_scores: np.ndarray, novel_scores: np.ndarray) -> float:
    """Area under the ROC curve, in-distribution positive, in percent:
    ``P(s_in > s_novel) + P(s_in = s_novel) / 2``, from the Mann-Whitney rank sum
    ``(R_in - n_in (n_in + 1) / 2) / (n_in n_novel)``."""
    s_in, s_nov = np.asarray(in_scores, dtype=float).ravel(), np.asarray(novel_scores, dtype=float).ravel()
    if s_in.size == 0 or s_nov.size == 0:
        return float("nan")
    ranks = _average_ranks(np.r_[s_in, s_nov])
    u = ranks[:s_in.size].sum() - s_in.size * (s_in.size + 1) / 2.0
    return float(100.0 * u / (s_in.size * s_nov.size))


def aupr(in_scores: np.ndarray, novel_scores: np.ndarray) -> float:
    """Area under the precision-recall curve with in-distribution positive (AUPR-In), in percent, as
    average precision ``sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds (sklearn's
    ``average_precision_score``, which CLAP4CLIP used)."""
    s_in, s_nov = np.asarray(in_scores, dtype=float).ravel(), np.asarray(novel_scores, dtype=float).ravel()
    if s_in.size == 0 or s_nov.size == 0:
        return float("nan")
    scores = np.r_[s_in, s_nov]
    order = np.argsort(-scores, kind="mergesort")
    ranked, positive = scores[order], np.r_[np.ones(s_in.size), np.zeros(s_nov.size)][order]
    last_of_group = np.r_[np.flatnonzero(ranked[1:] != ranked[:-1]), scores.size - 1]
    tp = np.cumsum(positive)[last_of_group]
    precision, recall = tp / (last_of_group + 1), tp / s_in.size
    return float(100.0 * np.sum(np.diff(np.r_[0.0, recall]) * precision))


def fpr_at_tpr(in_scores: np.ndarray, novel_scores: np.ndarray, tpr: float = 0.95) -> float:
    """False-positive rate (percent of novel images accepted, ``s >= tau``) at the threshold whose in-distribution
    recall is *closest* to ``tpr``, as CLAP4CLIP's ``utils/display_results.py`` (from energy_ood) computes FPR95:
    the candidate thresholds are the distinct values of all scores, from the highest down to the first one that
    accepts every in-distribution image; ties in ``|recall - tpr|`` go to the lower threshold (more accepted).
    The recall reached may be below ``tpr`` (e.g. 0.94 beats 0.97)."""
    s_in, s_nov = np.asarray(in_scores, dtype=float).ravel(), np.asarray(novel_scores, dtype=float).ravel()
    if s_in.size == 0 or s_nov.size == 0:
        return float("nan")
    scores = np.r_[s_in, s_nov]
    order = np.argsort(-scores, kind="mergesort")
    ranked, positive = scores[order], np.r_[np.ones(s_in.size), np.zeros(s_nov.size)][order]
    last_of_group = np.r_[np.flatnonzero(ranked[1:] != ranked[:-1]), scores.size - 1]   # one per distinct score
    tp = np.cumsum(positive)[last_of_group]
    fp = last_of_group + 1 - tp
    stop = int(np.searchsorted(tp, tp[-1]))                 # the first threshold with full recall
    distance = np.abs(tp[:stop + 1] / s_in.size - tpr)
    cut = stop - int(np.argmin(distance[::-1]))             # the lowest threshold among the closest
    return float(100.0 * fp[cut] / s_nov.size)


def novelty_detection(in_scores: dict[str, np.ndarray], novel_scores: dict[str, np.ndarray]
                      ) -> dict[str, dict[str, float]]:
    """``{score: {"auroc", "aupr", "fpr95"}}`` for every score both sides have."""
    return {name: {"auroc": auroc(in_scores[name], novel_scores[name]),
                   "aupr": aupr(in_scores[name], novel_scores[name]),
                   "fpr95": fpr_at_tpr(in_scores[name], novel_scores[name], 0.95)}
            for name in in_scores if name in novel_scores}
