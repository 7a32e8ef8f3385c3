"""Continual-learning metrics from an accuracy matrix: pure functions, numpy in, numbers out.

``A[t, k]`` is the accuracy (percent) on task ``k`` after training task ``t``; entries not evaluated
are NaN. Only the first ``T`` rows (the tasks trained so far) are used, with ``T = A.shape[0]``.
"""
from __future__ import annotations

import numpy as np


def _rows(A: np.ndarray) -> np.ndarray:
    A = np.asarray(A, dtype=float)
    if A.ndim != 2 or A.shape[0] == 0:
        raise ValueError("accuracy matrix must be 2-D with at least one row")
    return A


def step_accuracies(A: np.ndarray) -> np.ndarray:
    """Accuracy after each step t: mean over the tasks seen so far, ``mean_{k<=t} A[t, k]``
    (each task weighs the same, as mammoth and CLAP4CLIP report)."""
    A = _rows(A)
    T = A.shape[0]
    mask = np.tril(np.ones((T, A.shape[1]), dtype=bool))[:, :A.shape[1]]
    return np.nanmean(np.where(mask, A[:T], np.nan), axis=1)


def average_incremental_accuracy(A: np.ndarray) -> float:
    """``(1/T) sum_t (1/(t+1)) sum_{k<=t} A[t, k]``."""
    return float(np.mean(step_accuracies(A)))


def last_accuracy(A: np.ndarray) -> float:
    """``(1/T) sum_{k<T} A[T-1, k]``: mean accuracy on all seen tasks after the last step."""
    return float(step_accuracies(A)[-1])


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


def summary(A: np.ndarray) -> dict[str, float]:
    """The headline numbers of one accuracy matrix."""
    return {"avg_accuracy": average_incremental_accuracy(A), "last_accuracy": last_accuracy(A),
            "bwt": backward_transfer(A), "forgetting": forgetting(A)}
