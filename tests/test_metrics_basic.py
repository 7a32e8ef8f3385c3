"""The run-level metrics against numbers worked out by hand."""
import math

import numpy as np
import pytest

from utils import metrics

NAN = float("nan")
# rows: after task 0, 1, 2; columns: task 0, 1, 2 (percent)
A = np.array([[90.0, NAN, NAN],
              [95.0, 80.0, NAN],
              [50.0, 60.0, 85.0]])


def test_step_and_average_accuracy():
    # step accuracies: 90; (95+80)/2 = 87.5; (50+60+85)/3 = 65
    assert metrics.step_accuracies(A).tolist() == pytest.approx([90.0, 87.5, 65.0])
    assert metrics.average_incremental_accuracy(A) == pytest.approx((90 + 87.5 + 65) / 3)
    assert metrics.last_accuracy(A) == pytest.approx(65.0)


def test_bwt_uses_the_diagonal():
    # ((50 - 90) + (60 - 80)) / 2 = -30
    assert metrics.backward_transfer(A) == pytest.approx(-30.0)


def test_forgetting_uses_the_best_earlier_accuracy():
    # task 0: max(90, 95) - 50 = 45; task 1: 80 - 60 = 20; mean 32.5 (differs from -BWT = 30)
    assert metrics.forgetting(A) == pytest.approx(32.5)


def test_single_task_has_no_transfer():
    one = A[:1]
    assert math.isnan(metrics.backward_transfer(one)) and math.isnan(metrics.forgetting(one))
    assert metrics.last_accuracy(one) == 90.0


def test_future_entries_are_ignored():
    with_future = A.copy()
    with_future[0, 1:] = [30.0, 20.0]      # zero-shot numbers on tasks not trained yet
    assert metrics.summary(with_future) == pytest.approx(metrics.summary(A))
