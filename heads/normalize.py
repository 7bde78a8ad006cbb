"""Per-group normalisation (``--normalize speaker``): z-score each group's vectors with that
group's own mean / std, per feature set, before the head's global standardisation.

Acted-speech corpora carry large per-speaker offsets (voice pitch, loudness, recording
chain); removing them per speaker is the classic speaker normalisation of paralinguistics.
Statistics come from the features only (never labels), so a test speaker is normalised
with its own clips, at training and at prediction time alike. A group with fewer than
:data:`MIN_GROUP_CLIPS` clips (or no group value) falls back to the pooled statistics of
the training clips, which the run keeps in ``normalize.json``. The maths lives in
:mod:`featurestore.groupnorm` (indexes use it too); this module adds the run's side:
fallback statistics fitted on the training rows, saved and loaded with the run, and
statistics pinned over a whole archive (``emofs label`` predicts it in chunks).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from featurestore.errors import InputError
from featurestore.groupnorm import (
    MIN_GROUP_CLIPS,
    GroupAccumulator,
    group_statistics,
    group_values,
    mean_std,
    zscore_by_group,
)

log = logging.getLogger(__name__)

__all__ = ["MIN_GROUP_CLIPS", "NORMALIZE_FILE", "GroupNormalizer", "group_values"]

NORMALIZE_FILE = "normalize.json"

Stats = tuple[np.ndarray, np.ndarray]


class GroupNormalizer:
    """Fallback (training) statistics per feature set plus the group column's name.

    Args:
        column: the clip column naming the group (e.g. ``speaker``).
        fallback: ``{set: (mean (D,), std (D,))}`` over the training clips (raw features).
        min_clips: smallest group normalised with its own statistics.
        pinned: ``{set: {group: (mean, std)}}`` fixed in advance (see :meth:`pin`); None:
            each :meth:`apply` computes its groups' statistics from the rows it is given.
    """

    def __init__(self, column: str, fallback: dict[str, Stats], min_clips: int = MIN_GROUP_CLIPS,
                 pinned: dict[str, dict[str, Stats]] | None = None):
        self.column = column
        self.fallback = fallback
        self.min_clips = min_clips
        self.pinned = pinned

    @classmethod
    def fit(cls, column: str, features: dict[str, np.ndarray], train_rows: np.ndarray) -> "GroupNormalizer":
        """Fallback statistics from the training rows of ``{set: (N, D)}``."""
        return cls(column, {name: mean_std(x[train_rows]) for name, x in features.items()})

    def pin(self, batches: Iterable[tuple[dict[str, np.ndarray], np.ndarray]]) -> "GroupNormalizer":
        """A copy whose group statistics come from every row of ``batches``, not per call.

        ``emofs label`` predicts an archive in chunks; pinning the statistics of each
        group over the whole archive first normalises a speaker the same way whichever
        chunk a clip lands in.

        Args:
            batches: ``({set: (n, D)}, groups (n,))`` pairs covering the rows to normalise.

        Returns:
            A :class:`GroupNormalizer` whose :meth:`apply` uses these statistics (groups
            below ``min_clips`` over all batches, and unseen groups, use the fallback).
        """
        sums: dict[str, GroupAccumulator] = {name: GroupAccumulator() for name in self.fallback}
        for arrays, groups in batches:
            for name, x in arrays.items():
                sums.setdefault(name, GroupAccumulator()).add(x, groups)
        pinned, fell_back = {}, {}
        for name, acc in sums.items():
            pinned[name], fell_back = acc.statistics(self.min_clips)
        self._warn(fell_back)
        return GroupNormalizer(self.column, self.fallback, self.min_clips, pinned)

    def apply(self, features: dict[str, np.ndarray], groups: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Z-score every group of ``{set: (N, D)}`` with its own statistics.

        Args:
            features: raw vectors per feature set, rows aligned with ``groups``.
            groups: ``(N,)`` group values (None: no group).

        Returns:
            ``({set: (N, D) float32}, report)``; the report holds the column, the number of
            groups normalised on their own, and the groups (with clip counts) that fell back.
        """
        out: dict[str, np.ndarray] = {}
        own: dict[str, Stats] = {}
        fell_back: dict[str, int] = {}
        for name, x in features.items():
            if name not in self.fallback:
                raise InputError(f"--normalize: no training statistics for feature set {name!r}: retrain the run")
            if self.pinned is not None:
                own = self.pinned.get(name, {})
                fell_back = _unpinned(groups, own)
            else:
                own, fell_back = group_statistics(x, groups, self.min_clips)
            out[name] = zscore_by_group(x, groups, own, self.fallback[name]).astype(np.float32)
        if self.pinned is None:  # pinned statistics were reported once, when pinned
            self._warn(fell_back)
        counts = _counts(groups)
        report = {"column": self.column, "min_clips": self.min_clips, "groups": len(set(counts) & set(own)),
                  "clips_own_stats": sum(c for g, c in counts.items() if g in own), "fallback_groups": fell_back}
        return out, report

    def _warn(self, fell_back: dict[str, int]) -> None:
        if fell_back:
            log.warning(f"--normalize {self.column}: {len(fell_back)} group(s) with fewer than "
                        f"{self.min_clips} clips (or no {self.column}) use the training statistics: "
                        + ", ".join(f"{g} ({c})" for g, c in list(fell_back.items())[:10]))

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


def _counts(groups) -> dict[str, int]:
    """Rows per group value (``<none>`` for rows without one)."""
    out: dict[str, int] = {}
    for g in groups:
        key = "<none>" if g is None else str(g)
        out[key] = out.get(key, 0) + 1
    return out


def _unpinned(groups, own: dict[str, Stats]) -> dict[str, int]:
    return {g: c for g, c in _counts(groups).items() if g not in own}
