"""Per-group normalisation (``--normalize speaker``): z-score each group's vectors with that
group's own mean / std, per feature set, before the head's global standardisation.

Acted-speech corpora carry large per-speaker offsets (voice pitch, loudness, recording
chain); removing them per speaker is the classic speaker normalisation of paralinguistics.
Statistics come from the features only (never labels), so a test speaker is normalised
with its own clips, at training and at prediction time alike. A group with fewer than
:data:`MIN_GROUP_CLIPS` clips (or no group value) falls back to the pooled statistics of
the training clips, which the run keeps in ``normalize.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from featurestore.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["MIN_GROUP_CLIPS", "NORMALIZE_FILE", "GroupNormalizer", "group_values"]

#: Groups with fewer clips than this use the training statistics instead of their own.
MIN_GROUP_CLIPS = 10
NORMALIZE_FILE = "normalize.json"


def group_values(values: Sequence[Any]) -> np.ndarray:
    """Group column values as strings (``None`` stays None: no group, uses the fallback)."""
    return np.array([None if v is None else str(v) for v in values], dtype=object)


def _mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mean (D,), std (D,))`` in float64; a constant dimension gets std 1."""
    x = x.astype(np.float64)  # (n, D)
    mean = x.mean(0)
    std = x.std(0)
    return mean, np.where(std > 1e-6, std, 1.0)


class GroupNormalizer:
    """Fallback (training) statistics per feature set plus the group column's name.

    Args:
        column: the clip column naming the group (e.g. ``speaker``).
        fallback: ``{set: (mean (D,), std (D,))}`` over the training clips (raw features).
        min_clips: smallest group normalised with its own statistics.
    """

    def __init__(self, column: str, fallback: dict[str, tuple[np.ndarray, np.ndarray]],
                 min_clips: int = MIN_GROUP_CLIPS):
        self.column = column
        self.fallback = fallback
        self.min_clips = min_clips

    @classmethod
    def fit(cls, column: str, features: dict[str, np.ndarray], train_rows: np.ndarray) -> "GroupNormalizer":
        """Fallback statistics from the training rows of ``{set: (N, D)}``."""
        return cls(column, {name: _mean_std(x[train_rows]) for name, x in features.items()})

    def apply(self, features: dict[str, np.ndarray], groups: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Z-score every group of ``{set: (N, D)}`` with its own statistics.

        Args:
            features: raw vectors per feature set, rows aligned with ``groups``.
            groups: ``(N,)`` group values (None: no group).

        Returns:
            ``({set: (N, D) float32}, report)``; the report holds the column, the number of
            groups normalised on their own, and the groups (with clip counts) that fell back.
        """
        keys = np.array(["\0none" if g is None else g for g in groups], dtype=object)
        names, inverse, counts = np.unique(keys.astype(str), return_inverse=True, return_counts=True)
        own = [i for i, (g, c) in enumerate(zip(names, counts)) if g != "\0none" and c >= self.min_clips]
        out: dict[str, np.ndarray] = {}
        for name, x in features.items():
            if name not in self.fallback:
                raise InputError(f"--normalize: no training statistics for feature set {name!r}: retrain the run")
            mean, std = self.fallback[name]
            x = x.astype(np.float64)  # (N, D)
            z = (x - mean) / std  # (N, D) fallback for every row first
            for i in own:
                rows = inverse == i
                m, s = _mean_std(x[rows])  # (D,), (D,)
                z[rows] = (x[rows] - m) / s
            out[name] = z.astype(np.float32)
        fell_back = {("<none>" if g == "\0none" else str(g)): int(c)
                     for i, (g, c) in enumerate(zip(names, counts)) if i not in set(own)}
        if fell_back:
            log.warning(f"--normalize {self.column}: {len(fell_back)} group(s) with fewer than "
                        f"{self.min_clips} clips (or no {self.column}) use the training statistics: "
                        + ", ".join(f"{g} ({c})" for g, c in list(fell_back.items())[:10]))
        report = {"column": self.column, "min_clips": self.min_clips, "groups": len(own),
                  "clips_own_stats": int(counts[own].sum()) if own else 0, "fallback_groups": fell_back}
        return out, report

    # ----------------------------------------------------------------- io
    def save(self, run_dir: str | Path) -> None:
        """Write ``normalize.json`` (column, min clips, fallback mean / std per set)."""
        data = {"column": self.column, "min_clips": self.min_clips,
                "fallback": {k: {"mean": m.tolist(), "std": s.tolist()} for k, (m, s) in self.fallback.items()}}
        (Path(run_dir) / NORMALIZE_FILE).write_text(json.dumps(data) + "\n")

    @classmethod
    def load(cls, run_dir: str | Path) -> "GroupNormalizer":
        """Read ``normalize.json`` of a run trained with ``--normalize``."""
        path = Path(run_dir) / NORMALIZE_FILE
        try:
            data = json.loads(path.read_text())
            fallback = {k: (np.asarray(v["mean"], np.float64), np.asarray(v["std"], np.float64))
                        for k, v in data["fallback"].items()}
            return cls(data["column"], fallback, int(data["min_clips"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"run {Path(run_dir)} was trained with --normalize but {path} cannot be "
                             f"read ({type(exc).__name__}): retrain the run") from exc
