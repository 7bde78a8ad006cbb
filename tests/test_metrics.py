"""Emotion metrics against hand-computed values (imbalanced: WAR != UAR)."""

from __future__ import annotations

import numpy as np
import pytest

from heads.metrics import classification_metrics, confusion_matrix

LABELS = ["angry", "happy", "sad"]
# 6 angry, 2 happy, 2 sad (imbalanced).
Y_TRUE = [0, 0, 0, 0, 0, 0, 1, 1, 2, 2]
Y_PRED = [0, 0, 0, 0, 0, 1, 1, 0, 2, 1]


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.tolist() == [[5, 1, 0], [1, 1, 0], [0, 1, 1]]


def test_figures_by_hand_war_differs_from_uar():
    m = classification_metrics(Y_TRUE, Y_PRED, LABELS)
    # accuracy = WAR = 7 correct / 10
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["war"] == pytest.approx(0.7)
    # recalls 5/6, 1/2, 1/2 -> UAR = 11/18
    assert m["uar"] == pytest.approx((5 / 6 + 0.5 + 0.5) / 3)
    assert m["uar"] != pytest.approx(m["war"])
    # precisions 5/6, 1/3, 1; F1 5/6, 0.4, 2/3
    pc = m["per_class"]
    assert pc["angry"]["precision"] == pytest.approx(5 / 6)
    assert pc["happy"]["precision"] == pytest.approx(1 / 3)
    assert pc["sad"]["precision"] == pytest.approx(1.0)
    assert pc["happy"]["recall"] == pytest.approx(0.5)
    assert pc["happy"]["f1"] == pytest.approx(0.4)
    assert pc["sad"]["f1"] == pytest.approx(2 / 3)
    assert [pc[k]["support"] for k in LABELS] == [6, 2, 2]
    # weighted F1 = (6*5/6 + 2*0.4 + 2*2/3) / 10; macro F1 = (5/6 + 0.4 + 2/3) / 3
    assert m["weighted_f1"] == pytest.approx((5 + 0.8 + 4 / 3) / 10)
    assert m["macro_f1"] == pytest.approx((5 / 6 + 0.4 + 2 / 3) / 3)
    assert m["n"] == 10
    assert m["confusion"] == [[5, 1, 0], [1, 1, 0], [0, 1, 1]]


def test_absent_classes():
    # "fear" never occurs nor is predicted: ignored by UAR and macro F1.
    # "sad" is predicted but never true: counts in macro F1 (F1 0), not in UAR.
    labels = ["angry", "fear", "happy", "sad"]
    y_true = [0, 0, 2, 2]
    y_pred = [0, 3, 2, 2]
    m = classification_metrics(y_true, y_pred, labels)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["uar"] == pytest.approx((0.5 + 1.0) / 2)
    f1_angry = 2 * 1.0 * 0.5 / 1.5
    assert m["macro_f1"] == pytest.approx((f1_angry + 1.0 + 0.0) / 3)
    assert m["weighted_f1"] == pytest.approx((2 * f1_angry + 2 * 1.0) / 4)
    assert m["per_class"]["sad"]["precision"] == 0.0
    assert m["per_class"]["fear"]["support"] == 0


def test_perfect_and_empty():
    m = classification_metrics([1, 0, 1], [1, 0, 1], ["a", "b"])
    assert m["accuracy"] == m["uar"] == m["weighted_f1"] == m["macro_f1"] == 1.0
    empty = classification_metrics([], [], ["a", "b"])
    assert empty["n"] == 0 and empty["accuracy"] == 0.0


def test_bad_indices():
    with pytest.raises(ValueError):
        confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError):
        confusion_matrix([0, 1], [0], 3)


def test_matches_sklearn_on_random_imbalanced_data():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    y_true = rng.choice(5, 500, p=[0.5, 0.2, 0.15, 0.1, 0.05])
    y_pred = np.where(rng.random(500) < 0.6, y_true, rng.integers(0, 5, 500))
    m = classification_metrics(y_true, y_pred, list("abcde"))
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(y_true, y_pred))
    assert m["uar"] == pytest.approx(sk.balanced_accuracy_score(y_true, y_pred))
    assert m["weighted_f1"] == pytest.approx(sk.f1_score(y_true, y_pred, average="weighted"))
    assert m["macro_f1"] == pytest.approx(sk.f1_score(y_true, y_pred, average="macro"))
    assert np.array_equal(np.array(m["confusion"]), sk.confusion_matrix(y_true, y_pred))
