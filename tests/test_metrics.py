"""Every metric of utils/metrics.py against arithmetic done by hand (written out in each test), and the
calibration and novel-data metrics against independent loop-based references on random data."""
import math

import numpy as np
import pytest
import torch

from utils import metrics
from utils.metrics import mtil_summary

NAN = float("nan")
# the matrix of test_metrics_basic.py, with test sets of 100, 300 and 100 images
A = np.array([[90.0, NAN, NAN],
              [95.0, 80.0, NAN],
              [50.0, 60.0, 85.0]])
SIZES = np.array([100, 300, 100])
# a full MTIL-style matrix: the upper triangle holds accuracies on datasets not trained yet
M = np.array([[80.0, 40.0, 30.0],
              [70.0, 85.0, 35.0],
              [60.0, 75.0, 90.0]])


# ---- accuracy matrices ------------------------------------------------------------------------------

def test_sample_weighted_step_accuracy():
    # step 0: 90; step 1: (95*100 + 80*300) / 400 = 33500 / 400 = 83.75
    # step 2: (50*100 + 60*300 + 85*100) / 500 = 31500 / 500 = 63
    assert metrics.step_accuracies(A, SIZES).tolist() == pytest.approx([90.0, 83.75, 63.0])
    assert metrics.average_incremental_accuracy(A, SIZES) == pytest.approx((90 + 83.75 + 63) / 3)
    assert metrics.last_accuracy(A, SIZES) == pytest.approx(63.0)
    # the default is the mean of per-task accuracies: 90, 87.5, 65
    assert metrics.step_accuracies(A).tolist() == pytest.approx([90.0, 87.5, 65.0])
    # equal test sets: both conventions agree
    assert metrics.step_accuracies(A, [7, 7, 7]) == pytest.approx(metrics.step_accuracies(A))


def test_mtil_summary_is_column_wise():
    # Transfer: d=1: A[0,1] = 40; d=2: (A[0,2] + A[1,2]) / 2 = (30 + 35) / 2 = 32.5; mean (40 + 32.5) / 2 = 36.25
    # Avg: (80+40+30 + 70+85+35 + 60+75+90) / 9 = 565 / 9
    # Last: (60 + 75 + 90) / 3 = 75
    assert mtil_summary(M) == pytest.approx({"transfer": 36.25, "avg": 565 / 9, "last": 75.0})


def test_future_transfer_is_row_wise_and_differs_from_mtil():
    # t=0: (40 + 30) / 2 = 35; t=1: 35; mean 35 (MTIL's column-wise Transfer is 36.25)
    assert metrics.future_transfer(M) == pytest.approx(35.0)
    assert metrics.future_transfer(M) != pytest.approx(mtil_summary(M)["transfer"])


def test_forward_transfer_against_a_zero_shot_row():
    zero_shot = [50.0, 38.0, 20.0]
    # k=1: A[0,1] - r[1] = 40 - 38 = 2; k=2: A[1,2] - r[2] = 35 - 20 = 15; mean 8.5
    assert metrics.forward_transfer(M, zero_shot) == pytest.approx(8.5)


def test_transfer_needs_the_upper_triangle():
    # without --eval_future the upper triangle is NaN: transfer and Avg are undefined, Last is not
    summary = mtil_summary(A)
    assert math.isnan(summary["transfer"]) and math.isnan(summary["avg"])
    assert summary["last"] == pytest.approx(65.0)
    assert math.isnan(metrics.future_transfer(A)) and math.isnan(metrics.forward_transfer(A, [0, 0, 0]))


# ---- top-k ------------------------------------------------------------------------------------------

def test_topk_accuracy():
    scores = np.array([[0.1, 0.5, 0.3, 0.9, 0.2, 0.0],    # label 1: one class (0.9) above it -> top-5 only
                       [6.0, 5.0, 4.0, 3.0, 2.0, 1.0],    # label 5: five classes above it -> neither
                       [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]])   # label 2: the highest -> both
    labels = np.array([1, 5, 2])
    assert metrics.topk_accuracy(scores, labels, 1) == pytest.approx(100 / 3)
    assert metrics.topk_accuracy(scores, labels, 5) == pytest.approx(200 / 3)
    assert math.isnan(metrics.topk_accuracy(scores, labels, 7))            # only 6 classes


# ---- calibration ------------------------------------------------------------------------------------

def test_ece_by_hand_and_not_per_batch():
    conf = np.array([0.95, 0.95, 0.55, 0.55, 0.25])
    correct = np.array([1, 0, 1, 1, 0])
    # 15 bins of width 1/15: 0.95 -> bin 14 [0.933, 1], 0.55 -> bin 8 [0.533, 0.6), 0.25 -> bin 3 [0.2, 0.267)
    # bin 14: n=2, acc 0.5, conf 0.95, gap 0.45; bin 8: n=2, acc 1, conf 0.55, gap 0.45; bin 3: n=1, gap 0.25
    # ECE = (2*0.45 + 2*0.45 + 1*0.25) / 5 = 2.05 / 5 = 0.41 -> 41 %
    assert metrics.expected_calibration_error(conf, correct) == pytest.approx(41.0)
    # the mean of per-batch ECEs (batches of 2: 45, 45, 25 -> 38.33) is a different number
    per_batch = np.mean([metrics.expected_calibration_error(conf[i:i + 2], correct[i:i + 2]) for i in (0, 2, 4)])
    assert per_batch == pytest.approx(115 / 3) and per_batch != pytest.approx(41.0)
    diagram = metrics.reliability_diagram(conf, correct)
    assert diagram["counts"].tolist() == [0, 0, 0, 1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 2, 0]
    assert diagram["accuracy"][[3, 8, 14]].tolist() == pytest.approx([0.0, 100.0, 50.0])
    assert diagram["confidence"][[3, 8, 14]].tolist() == pytest.approx([25.0, 55.0, 95.0])
    assert np.isnan(diagram["accuracy"][0]) and diagram["bin_edges"][[0, -2, -1]].tolist() == [0.0, 100.0, 100.0]
    # a confidence of exactly 1 has a bin of its own (torchmetrics' bucketize), apart from [14/15, 1)
    assert metrics.reliability_diagram([1.0], [1])["counts"].tolist() == [0] * 15 + [1]
    # [0.95 wrong, 1.0 right]: one bin [14/15, 1] would give |0.5 - 0.975| = 47.5; two bins give (95 + 0) / 2
    assert metrics.expected_calibration_error([0.95, 1.0], [0, 1]) == pytest.approx(47.5)


def _loop_ece(conf, correct, n_bins=15):
    """The textbook definition, one bin and one sample at a time."""
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [i for i in range(len(conf)) if lo <= conf[i] < hi]
        if members:
            acc = sum(correct[i] for i in members) / len(members)
            avg_conf = sum(conf[i] for i in members) / len(members)
            total += len(members) / len(conf) * abs(acc - avg_conf)
    ones = [i for i in range(len(conf)) if conf[i] == 1.0]             # torchmetrics' bin past the last edge
    if ones:
        total += len(ones) / len(conf) * abs(sum(correct[i] for i in ones) / len(ones) - 1.0)
    return 100.0 * total


def test_ece_matches_a_loop_on_random_data():
    rng = np.random.default_rng(0)
    for n in (1, 17, 500):
        conf = rng.uniform(0.05, 1.0, n)
        conf[::5] = 1.0                                                     # a saturated softmax
        correct = rng.uniform(size=n) < conf ** 2
        assert metrics.expected_calibration_error(conf, correct) == pytest.approx(_loop_ece(conf, correct))


def test_ece_equals_torchmetrics_calibration_error():
    """The test-only dependency: torchmetrics' multiclass/binary calibration_error (15 bins, L1), which
    CLAP4CLIP computed, on the same confidences, saturated ones (exactly 1.0) included."""
    import torchmetrics.functional.classification as torchmetrics     # requirements-dev.txt: never skipped
    gen = torch.Generator().manual_seed(0)
    for n, c, scale in ((200, 10, 3.0), (1000, 100, 30.0), (64, 5, 300.0)):   # the last saturates (CLAP's 100x)
        logits = torch.randn(n, c, generator=gen) * scale
        target = torch.randint(0, c, (n,), generator=gen)
        target[:n // 2] = logits[:n // 2].argmax(1)                          # half right by construction
        probs = logits.softmax(1)
        conf, pred = probs.max(1)
        ours = metrics.expected_calibration_error(conf.numpy(), (pred == target).numpy())
        ref = torchmetrics.multiclass_calibration_error(probs, target, num_classes=c, n_bins=15, norm="l1")
        assert ours == pytest.approx(100 * float(ref), abs=1e-4)
        binary = torchmetrics.binary_calibration_error(conf, (pred == target).long(), n_bins=15, norm="l1")
        assert ours == pytest.approx(100 * float(binary), abs=1e-4)
    assert (probs.max(1).values == 1.0).any()                              # the separate bin was exercised


def test_mean_batch_ece_is_clap4clips_per_batch_mean():
    conf = np.array([0.95, 0.95, 0.55, 0.55, 0.25])
    correct = np.array([1, 0, 1, 1, 0])
    assert metrics.mean_batch_ece(conf, correct, [2, 2, 1]) == pytest.approx(115 / 3)
    assert metrics.mean_batch_ece(conf, correct, [5]) == pytest.approx(41.0)
    with pytest.raises(ValueError):
        metrics.mean_batch_ece(conf, correct, [2, 2])


# ---- novel-data detection ---------------------------------------------------------------------------

def test_scores_by_hand():
    logits = np.array([[0.0, math.log(3)]])
    assert metrics.energy_score(logits)[0] == pytest.approx(math.log(4))          # log(e^0 + e^log3)
    assert metrics.max_softmax_score(logits)[0] == pytest.approx(0.75)              # 3 / (1 + 3)
    # two samples: softmax [.5, .5] and [.75, .25]; per class Var = ((.125)^2 + (.125)^2) / 2 = .015625
    samples = np.array([[[0.0, 0.0]], [[math.log(3), 0.0]]])
    assert metrics.variance_score(samples)[0] == pytest.approx(-2 * 0.015625)
    assert set(metrics.novelty_scores(logits)) == {"energy", "max_softmax"}
    assert set(metrics.novelty_scores(logits, samples)) == {"energy", "max_softmax", "variance"}


def test_scores_agree_with_torch():
    x = torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert metrics.energy_score(x[0].numpy()) == pytest.approx(torch.logsumexp(x[0], 1).numpy())
    assert metrics.max_softmax_score(x[0].numpy()) == pytest.approx(x[0].softmax(1).amax(1).numpy())
    reference = -x.softmax(-1).var(0, unbiased=False).sum(-1)
    assert metrics.variance_score(x.numpy()) == pytest.approx(reference.numpy())


def test_detection_metrics_by_hand():
    s_in, s_novel = np.array([0.9, 0.8, 0.4]), np.array([0.7, 0.4, 0.1])
    # AUROC, pairs (in, novel): 0.9 and 0.8 beat all 3 -> 6; 0.4 loses to 0.7, ties 0.4 (1/2), beats 0.1 -> 1.5
    # 7.5 / 9 = 83.33 %
    assert metrics.auroc(s_in, s_novel) == pytest.approx(750 / 9)
    # AUPR (in positive), thresholds high to low: 0.9 P=1 R=1/3; 0.8 P=1 R=2/3; 0.7 P=2/3 R=2/3;
    # 0.4 P=3/5 R=1; 0.1 P=1/2 R=1. AP = 1/3*1 + 1/3*1 + 0 + 1/3*3/5 + 0 = 13/15 = 86.67 %
    assert metrics.aupr(s_in, s_novel) == pytest.approx(100 * 13 / 15)
    # FPR95: ceil(0.95*3) = 3 -> tau = 0.4 (all in-distribution kept); novel >= 0.4: 0.7, 0.4 -> 2/3
    assert metrics.fpr_at_tpr(s_in, s_novel) == pytest.approx(200 / 3)
    result = metrics.novelty_detection({"energy": s_in}, {"energy": s_novel, "variance": s_novel})
    assert set(result) == {"energy"} and set(result["energy"]) == {"auroc", "aupr", "fpr95"}


def _pair_count_auroc(s_in, s_novel):
    """Mann-Whitney: the fraction of (in, novel) pairs ordered correctly, ties counting one half."""
    wins = sum((a > b) + 0.5 * (a == b) for a in s_in for b in s_novel)
    return 100.0 * wins / (len(s_in) * len(s_novel))


def _loop_average_precision(s_in, s_novel):
    """AP as the mean over in-distribution images of the precision at their own score."""
    everything = list(s_in) + list(s_novel)
    precisions = [sum(a >= s for a in s_in) / sum(a >= s for a in everything) for s in s_in]
    return 100.0 * sum(precisions) / len(s_in)


def _loop_fpr(s_in, s_novel, tpr=0.95):
    """CLAP4CLIP's display_results, one threshold at a time: every distinct score from the top down to the lowest
    in-distribution one; keep the first threshold whose recall is strictly closer to ``tpr`` than the best so far
    scanning upwards from the bottom (so ties go to the lower threshold)."""
    candidates = sorted({s for s in list(s_in) + list(s_novel) if s >= min(s_in)})       # ascending
    best, best_distance = None, math.inf
    for t in candidates:
        distance = abs(sum(a >= t for a in s_in) / len(s_in) - tpr)
        if distance < best_distance:
            best, best_distance = t, distance
    return 100.0 * sum(b >= best for b in s_novel) / len(s_novel)


def test_fpr95_takes_the_recall_closest_to_95_percent():
    # 20 in-distribution scores 20..1: recall 19/20 = 0.95 from threshold 2 down to just above 1, so the lowest
    # such candidate (the novel score 1.5) is taken: 30, 2.5 and 1.5 are accepted, 0.5 is not
    s_in = np.arange(20, 0, -1, dtype=float)
    assert metrics.fpr_at_tpr(s_in, np.array([2.5, 1.5, 0.5, 30.0])) == pytest.approx(75.0)
    # 12 scores: recall 11/12 = 0.917 (0.033 away) beats 12/12 (0.05 away), although it is below 95 %
    # ("the highest threshold keeping at least 95 %" would take threshold 1 and accept 0.9 too)
    s_in = np.arange(12, 0, -1, dtype=float)
    assert metrics.fpr_at_tpr(s_in, np.array([1.5, 0.9, 3.5])) == pytest.approx(200 / 3)
    # the lowest in-distribution score ends the candidates: novel scores below it never count
    assert metrics.fpr_at_tpr(np.array([5.0, 4.0]), np.array([3.0, 6.0])) == pytest.approx(50.0)


@pytest.mark.parametrize("decimals", [None, 1])         # continuous scores, and scores with many ties
def test_detection_metrics_match_loops_on_random_data(decimals):
    rng = np.random.default_rng(1)
    for n_in, n_novel in ((40, 60), (7, 3), (101, 20)):
        s_in, s_novel = rng.normal(0.8, 1, n_in), rng.normal(0, 1, n_novel)
        if decimals is not None:
            s_in, s_novel = s_in.round(decimals), s_novel.round(decimals)
        assert metrics.auroc(s_in, s_novel) == pytest.approx(_pair_count_auroc(s_in, s_novel))
        assert metrics.aupr(s_in, s_novel) == pytest.approx(_loop_average_precision(s_in, s_novel))
        assert metrics.fpr_at_tpr(s_in, s_novel) == pytest.approx(_loop_fpr(s_in, s_novel))


def test_metrics_are_vectorised():
    import time
    rng = np.random.default_rng(2)
    s_in, s_novel = rng.normal(size=200_000), rng.normal(size=200_000)
    conf = rng.uniform(size=400_000)
    start = time.perf_counter()
    metrics.auroc(s_in, s_novel), metrics.aupr(s_in, s_novel), metrics.fpr_at_tpr(s_in, s_novel)
    metrics.expected_calibration_error(conf, conf > 0.5)
    assert time.perf_counter() - start < 2.0


def test_diagonal_forgetting_and_interference():
    """Forgetting from right after each task (not from its best), and what each task's training did to the earlier
    ones: the numbers scripts/interference.py prints."""
    A = np.array([[50.0, 10.0, 5.0], [60.0, 90.0, 8.0], [30.0, 70.0, 70.0]])
    assert metrics.diagonal_forgetting(A) == pytest.approx(((50 - 30) + (90 - 70)) / 2)
    assert metrics.forgetting(A) == pytest.approx(((60 - 30) + (90 - 70)) / 2)      # the best earlier, 60
    D = metrics.interference(A)
    assert D[1, 0] == 10 and D[2, 0] == -30 and D[2, 1] == -20
    assert np.isnan(D[0]).all() and np.isnan(D[1, 1:]).all() and np.isnan(D[2, 2])
    assert np.isnan(metrics.diagonal_forgetting(np.array([[40.0]])))
