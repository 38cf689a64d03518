"""Metrics against hand-computed values and scikit-learn."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from engine.metrics import multilabel_metrics


def test_metrics_match_hand_computed_values():
    targets = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
    scores = np.array([[0.9, 0.2], [0.6, 0.4], [0.7, 0.1], [0.2, 0.8]])
    m = multilabel_metrics(scores, targets)
    # predictions at 0.5: [1,0], [1,0], [1,0], [0,1] -> TP 3, predicted 4, true 4
    assert m["OP"] == pytest.approx(3 / 4) and m["OR"] == pytest.approx(3 / 4)
    # class 0: P 2/3, R 1; class 1: P 1, R 1/2
    assert m["CP"] == pytest.approx((2 / 3 + 1) / 2) and m["CR"] == pytest.approx(0.75)
    cp, cr = (2 / 3 + 1) / 2, 0.75
    assert m["CF1"] == pytest.approx(2 * cp * cr / (cp + cr))
    assert m["EF1"] == pytest.approx((1 + 2 / 3 + 0 + 1) / 4)  # empty/non-empty image -> 0


def test_average_precision_matches_sklearn():
    rng = np.random.default_rng(0)
    targets = rng.random((200, 6)) < 0.3
    scores = np.round(rng.random((200, 6)) + targets * 0.3, 2)  # ties included
    m = multilabel_metrics(scores, targets)
    expected = np.mean([average_precision_score(targets[:, j], scores[:, j]) for j in range(6)])
    assert m["mAP_macro"] == pytest.approx(expected)
    assert m["mAP_micro"] == pytest.approx(average_precision_score(targets.ravel(), scores.ravel()))


def test_top3_metrics_predict_each_images_three_best_labels():
    targets = np.array([[1, 1, 0, 0, 0], [0, 0, 0, 0, 1]])
    scores = np.array([[0.9, 0.8, 0.7, 0.1, 0.0], [0.5, 0.4, 0.3, 0.2, 0.1]])
    top3 = multilabel_metrics(scores, targets)["top3"]
    # image 1: top3 {0,1,2}, 2 right of 3; image 2: top3 {0,1,2}, none right
    assert top3["OP"] == pytest.approx(2 / 6) and top3["OR"] == pytest.approx(2 / 3)


def test_calibrated_thresholds_maximise_each_labels_f1_and_keep_rare_labels():
    from engine.metrics import calibrate_thresholds, common_threshold

    rng = np.random.default_rng(0)
    targets = np.zeros((200, 3), bool)
    targets[:60, 0] = True
    targets[:2, 2] = True                                 # too few positives to calibrate
    scores = rng.random((200, 3)) * 0.3
    scores[:60, 0] += 0.35                                 # positives at 0.35-0.65
    thresholds = calibrate_thresholds(scores, targets, current=[0.5, 0.5, 0.7], shrink=0)
    assert 0.3 <= thresholds[0] <= 0.35                   # in the gap (F1 1.0), not 0.5
    assert thresholds[1] == 0.5 and thresholds[2] == 0.7  # no / too few positives: kept
    pred = scores[:, 0] >= thresholds[0]
    assert (pred == targets[:, 0]).all()
    # The trainer's rule: the F1-best value moved halfway back to the common threshold;
    # kept ones stay put.
    common = common_threshold(scores, targets)
    halfway = calibrate_thresholds(scores, targets, current=[0.5, 0.5, 0.7])
    assert halfway[0] == pytest.approx((thresholds[0] + common) / 2)
    assert halfway[1:] == [0.5, 0.7]
    to_half = calibrate_thresholds(scores, targets, current=[0.5, 0.5, 0.7], towards=0.5)
    assert to_half[0] == pytest.approx((thresholds[0] + 0.5) / 2)


def _lifted_scores(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities as the asymmetric loss leaves them: every label's negatives spread up
    to 0.8, its positives at 0.7-1.0, so the model's operating point is far above 0.5."""
    targets = rng.random((n, 6)) < 0.3
    scores = np.where(targets, rng.uniform(0.7, 1.0, (n, 6)), rng.uniform(0.0, 0.8, (n, 6)))
    return scores, targets


def test_thresholds_stay_at_the_models_operating_point_when_probabilities_are_lifted():
    from engine.metrics import calibrate_thresholds, common_threshold, multilabel_metrics

    rng = np.random.default_rng(1)
    val, val_t = _lifted_scores(rng, 250)
    test, test_t = _lifted_scores(rng, 2000)
    common = common_threshold(val, val_t)
    assert 0.7 <= common <= 0.8                   # the model's operating point, not 0.5
    ours = calibrate_thresholds(val, val_t)
    to_half = calibrate_thresholds(val, val_t, towards=0.5)
    assert min(ours) > max(to_half)               # 0.5 drags every label down
    of1 = [multilabel_metrics(test, test_t, np.asarray(t))["OF1"] for t in (ours, to_half)]
    assert of1[0] > of1[1] + 0.02
