"""Per-group z-scores (``--normalize speaker``): the maths shared by heads and indexes.

Acted-speech corpora carry large per-speaker offsets (voice pitch, loudness, recording
chain); z-scoring each speaker's vectors with that speaker's own mean / std removes them.
Statistics come from the vectors only (never labels). A group with fewer than
:data:`MIN_GROUP_CLIPS` rows, or rows without a group value, use fallback statistics
instead (the training rows' for a head run, the indexed rows' for an index).

Plain numpy, no models: ``heads.normalize`` (train / predict / label) and
``featurestore.index`` (build / similar) both use these functions, so a speaker is
normalised the same way everywhere.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

__all__ = [
    "MIN_GROUP_CLIPS",
    "NO_GROUP",
    "mean_std",
    "group_values",
    "group_keys",
    "group_statistics",
    "zscore_by_group",
    "GroupAccumulator",
    "stats_to_json",
    "stats_from_json",
]

#: Groups with fewer rows than this use the fallback statistics instead of their own.
MIN_GROUP_CLIPS = 10
#: Key of rows without a group value (they always use the fallback).
NO_GROUP = "\0none"

Stats = tuple[np.ndarray, np.ndarray]  # (mean (D,), std (D,)) float64


def mean_std(x: np.ndarray) -> Stats:
    """``(mean (D,), std (D,))`` of ``(n, D)`` rows in float64; a constant dimension gets std 1."""
    x = np.asarray(x, dtype=np.float64)  # (n, D)
    mean = x.mean(0)
    std = x.std(0)
    return mean, np.where(std > 1e-6, std, 1.0)


def group_values(values: Sequence[Any]) -> np.ndarray:
    """Group column values as strings (``None`` stays None: no group, uses the fallback)."""
    return np.array([None if v is None else str(v) for v in values], dtype=object)


def group_keys(groups: Sequence[Any]) -> np.ndarray:
    """``(N,)`` string keys; rows without a group get :data:`NO_GROUP`."""
    return np.array([NO_GROUP if g is None else str(g) for g in groups], dtype=object).astype(str)


def _readable(key: str) -> str:
    return "<none>" if key == NO_GROUP else key


def group_statistics(x: np.ndarray, groups: Sequence[Any],
                     min_clips: int = MIN_GROUP_CLIPS) -> tuple[dict[str, Stats], dict[str, int]]:
    """Each large enough group's own statistics over the rows of ``x``.

    Args:
        x: ``(N, D)`` vectors.
        groups: ``(N,)`` group values (None: no group).
        min_clips: smallest group given its own statistics.

    Returns:
        ``({group: (mean (D,), std (D,))}, {group: rows})``: the statistics of groups with
        at least ``min_clips`` rows, and the row counts of the groups (``<none>`` for rows
        without one) that must fall back.
    """
    keys = group_keys(groups)
    names, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    own: dict[str, Stats] = {}
    fell_back: dict[str, int] = {}
    for i, (name, count) in enumerate(zip(names, counts)):
        if name != NO_GROUP and count >= min_clips:
            own[str(name)] = mean_std(x[inverse == i])
        else:
            fell_back[_readable(str(name))] = int(count)
    return own, fell_back


def zscore_by_group(x: np.ndarray, groups: Sequence[Any], own: dict[str, Stats],
                    fallback: Stats) -> np.ndarray:
    """Z-score every row with its group's statistics (``fallback`` where it has none).

    Args:
        x: ``(N, D)`` vectors.
        groups: ``(N,)`` group values (None: no group).
        own: ``{group: (mean (D,), std (D,))}`` (from :func:`group_statistics`, or pinned).
        fallback: ``(mean (D,), std (D,))`` for rows whose group is not in ``own``.

    Returns:
        ``(N, D)`` float64.
    """
    x = np.asarray(x, dtype=np.float64)  # (N, D)
    mean, std = fallback
    z = (x - mean) / std  # (N, D): every row the fallback first
    keys = group_keys(groups)
    for name in np.unique(keys):
        stats = own.get(str(name))
        if stats is not None:
            rows = keys == name
            z[rows] = (x[rows] - stats[0]) / stats[1]
    return z


class GroupAccumulator:
    """Per-group running sums, for statistics over more rows than one batch holds.

    ``add`` batches of rows, then :meth:`statistics` gives what :func:`group_statistics`
    would give over all of them at once (to float64 rounding).
    """

    def __init__(self) -> None:
        self._n: dict[str, int] = {}
        self._sum: dict[str, np.ndarray] = {}
        self._sq: dict[str, np.ndarray] = {}

    def add(self, x: np.ndarray, groups: Sequence[Any]) -> None:
        """Add ``(n, D)`` rows with their ``(n,)`` group values."""
        x = np.asarray(x, dtype=np.float64)  # (n, D)
        keys = group_keys(groups)
        for name in np.unique(keys):
            rows = x[keys == name]  # (m, D)
            key = str(name)
            if key in self._n:
                self._n[key] += len(rows)
                self._sum[key] += rows.sum(0)
                self._sq[key] += (rows * rows).sum(0)
            else:
                self._n[key] = len(rows)
                self._sum[key] = rows.sum(0)
                self._sq[key] = (rows * rows).sum(0)

    def counts(self) -> dict[str, int]:
        """Rows seen per group (``<none>``: rows without a group)."""
        return {_readable(k): n for k, n in self._n.items()}

    def statistics(self, min_clips: int = MIN_GROUP_CLIPS) -> tuple[dict[str, Stats], dict[str, int]]:
        """Like :func:`group_statistics`, over every row added so far."""
        own: dict[str, Stats] = {}
        fell_back: dict[str, int] = {}
        for key, n in sorted(self._n.items()):
            if key != NO_GROUP and n >= min_clips:
                mean = self._sum[key] / n
                var = np.maximum(self._sq[key] / n - mean * mean, 0.0)
                std = np.sqrt(var)
                own[key] = (mean, np.where(std > 1e-6, std, 1.0))
            else:
                fell_back[_readable(key)] = n
        return own, fell_back


def stats_to_json(stats: Stats) -> dict[str, list[float]]:
    """``{"mean": [...], "std": [...]}`` of a ``(mean, std)`` pair."""
    return {"mean": np.asarray(stats[0]).tolist(), "std": np.asarray(stats[1]).tolist()}


def stats_from_json(data: dict[str, Iterable[float]]) -> Stats:
    """The ``(mean, std)`` pair of :func:`stats_to_json`'s output."""
    return np.asarray(list(data["mean"]), np.float64), np.asarray(list(data["std"]), np.float64)

