"""Peak frame: the sampled face that deviates most from the clip's median face.

Emotion-LLaMA picks the frame with the largest sum of OpenFace action-unit intensities.
OpenFace is not installable from PyPI, so emofs uses an offline appearance measure instead
and names it for what it is, ``median-face-deviation``: every face crop is reduced to a
48x48 grey image, normalised to zero mean and unit variance (removing global lighting),
the per-pixel median over the clip is taken as the clip's resting face, and the frame whose
crop differs most from it (mean absolute difference) is the peak. A neutral face moves
little from the median; a frame with raised brows, an open mouth or a frown moves most.
It is a proxy for expression intensity, not an action-unit estimate.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PEAK_METHOD", "expression_deviation", "peak_index"]

PEAK_METHOD = "median-face-deviation"
_SIDE = 48


def expression_deviation(face_crops: np.ndarray) -> np.ndarray:
    """Deviation of each face crop ``(F, S, S, 3)`` from the clip's median face.  # (F,)"""
    import cv2

    grey = np.stack(
        [cv2.resize(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY), (_SIDE, _SIDE), interpolation=cv2.INTER_AREA)
         for c in face_crops]
    ).astype(np.float32)  # (F, 48, 48)
    grey -= grey.mean(axis=(1, 2), keepdims=True)
    grey /= grey.std(axis=(1, 2), keepdims=True) + 1e-6
    median = np.median(grey, axis=0)  # (48, 48)
    return np.abs(grey - median).mean(axis=(1, 2))  # (F,)


def peak_index(face_crops: np.ndarray, detected: np.ndarray | None = None) -> int:
    """Index (into the sampled frames) of the peak-expression frame.

    With ``detected`` given, only the frames marked True compete (when any is).
    """
    if len(face_crops) == 1:
        return 0
    score = expression_deviation(face_crops)
    if detected is not None and detected.any():
        score = np.where(detected, score, -np.inf)
    return int(np.argmax(score))
