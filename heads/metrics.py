"""Emotion-recognition metrics in numpy (no scikit-learn needed).

* accuracy = WAR (weighted average recall, DFEW): correct / total.
* UAR (unweighted average recall, DFEW): mean recall over the classes present in the
  ground truth.
* weighted F1 (MER2023): per-class F1 weighted by support.
* macro F1: mean per-class F1 over classes present in the ground truth or predictions.
* per-class precision / recall / F1 / support, and the confusion matrix
  (rows: true class, columns: predicted class).

A class with no predictions has precision 0 (no division by zero warnings).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["confusion_matrix", "classification_metrics", "HEADLINE"]

#: The figures reports and ablation tables show, in order.
HEADLINE = ("accuracy", "weighted_f1", "macro_f1", "uar", "war")


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """Counts ``C[i, j]`` of clips of true class ``i`` predicted as ``j``.

    Args:
        y_true: true class indices, shape ``(N,)``.
        y_pred: predicted class indices, shape ``(N,)``.
        n_classes: vocabulary size (matrix is ``(n_classes, n_classes)``).
    """
    t = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length ({t.size} vs {p.size})")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n_classes):
        raise ValueError(f"class indices must be in 0..{n_classes - 1}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )


def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]
) -> dict[str, Any]:
    """All the figures of a run on one set of clips.

    Args:
        y_true: true class indices into ``labels``.
        y_pred: predicted class indices into ``labels``.
        labels: the label vocabulary.

    Returns:
        ``{"n", "accuracy", "war", "uar", "weighted_f1", "macro_f1", "per_class":
        {label: {"precision", "recall", "f1", "support"}}, "confusion": [[...]],
        "labels": [...]}``.
    """
    n_classes = len(labels)
    cm = confusion_matrix(y_true, y_pred, n_classes)
    n = int(cm.sum())
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)  # true clips per class
    predicted = cm.sum(axis=0).astype(np.float64)  # predictions per class
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = support > 0
    seen = present | (predicted > 0)
    accuracy = float(tp.sum() / n) if n else 0.0
    return {
        "n": n,
        "accuracy": accuracy,
        "war": accuracy,
        "uar": float(recall[present].mean()) if present.any() else 0.0,
        "weighted_f1": float((f1 * support).sum() / support.sum()) if n else 0.0,
        "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0,
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion": cm.tolist(),
        "labels": list(labels),
    }
