"""Metrics against hand-computed values and scikit-learn; fold aggregation."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

from cta_rnn.metrics import (
    aggregate_folds,
    classification_scores,
    confusion,
    macro_f1,
    mean_std,
    per_class_recall,
    unweighted_accuracy,
    weighted_accuracy,
)

LABELS = ["neu", "hap", "ang", "sad"]
# 6 neu, 2 hap, 1 ang, 1 sad; one hap and the ang are predicted neu.
Y_TRUE = ["neu"] * 6 + ["hap", "hap", "ang", "sad"]
Y_PRED = ["neu"] * 6 + ["neu", "hap", "neu", "sad"]
# By hand:
#   WA = correct / total = (6 + 1 + 0 + 1) / 10 = 0.8
#   recall: neu 6/6 = 1, hap 1/2 = 0.5, ang 0/1 = 0, sad 1/1 = 1  ->  UA = 2.5 / 4 = 0.625  (UA != WA)
#   precision: neu 6/8, hap 1/1, ang 0/0 -> 0, sad 1/1
#   F1: neu 2*(3/4)*1/(3/4+1) = 6/7, hap 2*1*(1/2)/(3/2) = 2/3, ang 0, sad 1 -> macro (6/7 + 2/3 + 1)/4 = 53/84
HAND_WA, HAND_UA, HAND_F1 = 0.8, 0.625, 53 / 84
HAND_CM = [[6, 0, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]]


def test_hand_computed_example() -> None:
    assert weighted_accuracy(Y_TRUE, Y_PRED) == pytest.approx(HAND_WA)
    assert unweighted_accuracy(Y_TRUE, Y_PRED, LABELS) == pytest.approx(HAND_UA)
    assert macro_f1(Y_TRUE, Y_PRED, LABELS) == pytest.approx(HAND_F1)
    assert confusion(Y_TRUE, Y_PRED, LABELS).tolist() == HAND_CM
    assert per_class_recall(Y_TRUE, Y_PRED, LABELS) == {"neu": 1.0, "hap": 0.5, "ang": 0.0, "sad": 1.0}


def test_matches_sklearn_on_random_labels() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        yt = rng.integers(0, 4, size=57)
        yp = np.where(rng.random(57) < 0.6, yt, rng.integers(0, 4, size=57))
        assert weighted_accuracy(yt, yp) == pytest.approx(accuracy_score(yt, yp))
        assert unweighted_accuracy(yt, yp) == pytest.approx(balanced_accuracy_score(yt, yp))
        assert unweighted_accuracy(yt, yp) == pytest.approx(recall_score(yt, yp, average="macro", zero_division=0))
        assert macro_f1(yt, yp) == pytest.approx(f1_score(yt, yp, average="macro", zero_division=0))


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_class_absent_from_truth_is_excluded_from_ua() -> None:
    # No sad in y_true; one neu is predicted sad. Recall neu 1/2, hap 1/1 -> UA 0.75 (sad not averaged in).
    yt, yp = ["neu", "neu", "hap"], ["neu", "sad", "hap"]
    assert unweighted_accuracy(yt, yp, LABELS) == pytest.approx(0.75)
    assert unweighted_accuracy(yt, yp, LABELS) == pytest.approx(balanced_accuracy_score(yt, yp))
    assert per_class_recall(yt, yp, LABELS)["sad"] is None and per_class_recall(yt, yp, LABELS)["ang"] is None
    # F1 counts the predicted-but-absent sad as 0 and skips ang (in neither): (2/3 + 1 + 0) / 3
    assert macro_f1(yt, yp, LABELS) == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_classification_scores_and_errors() -> None:
    s = classification_scores(Y_TRUE, Y_PRED, LABELS)
    assert s["n"] == 10 and s["labels"] == LABELS and s["confusion"] == HAND_CM
    assert (s["wa"], s["ua"], s["macro_f1"]) == pytest.approx((HAND_WA, HAND_UA, HAND_F1))
    assert s["support"] == {"neu": 6, "hap": 2, "ang": 1, "sad": 1}
    with pytest.raises(ValueError, match="not in the label set"):
        confusion(["neu", "fru"], ["neu", "neu"], LABELS)
    with pytest.raises(ValueError, match="items"):
        weighted_accuracy(["neu"], ["neu", "hap"])
    with pytest.raises(ValueError, match="no predictions"):
        unweighted_accuracy([], [])


def test_aggregate_folds_sample_std_and_summed_confusion() -> None:
    folds = [
        {"wa": 0.5, "ua": 0.4, "macro_f1": 0.3, "confusion": [[1, 0], [0, 1]]},
        {"wa": 0.7, "ua": 0.6, "macro_f1": 0.5, "confusion": [[2, 1], [0, 0]]},
        {"wa": 0.9, "ua": 0.8, "macro_f1": 0.7, "confusion": [[0, 0], [3, 4]]},
    ]
    agg = aggregate_folds(folds)
    # mean 0.7; sample std sqrt(((-0.2)^2 + 0 + 0.2^2) / (3 - 1)) = sqrt(0.04) = 0.2
    assert agg["wa"]["mean"] == pytest.approx(0.7) and agg["wa"]["std"] == pytest.approx(0.2)
    assert agg["ua"]["std"] == pytest.approx(statistics.stdev([0.4, 0.6, 0.8]))
    assert agg["macro_f1"]["n"] == 3 and agg["ddof"] == 1
    assert agg["confusion"] == [[3, 1], [3, 5]]
    assert aggregate_folds(folds, ddof=0)["wa"]["std"] == pytest.approx(math.sqrt(0.08 / 3))
    one = mean_std([0.42])
    assert one == {"mean": 0.42, "std": None, "n": 1}
