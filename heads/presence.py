"""Presence masks: which feature sets each clip has, and how heads read them.

A clip's presence mask says which of a run's feature sets it has (a row in
``features/<set>.lance``; the LLM prompt path names the others as missing modalities, the
same notion). Batches carry it as ``batch["present"] = {set: (B,) bool}``; the fusion heads
take it as a ``(B, M)`` mask (:func:`batch_presence`). Metrics and predictions name a
clip's pattern (:func:`pattern_names`: ``both``, ``egemaps only``, ...) and the sets used
(:func:`presence_names`: ``egemaps+mae``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["presence_matrix", "presence_names", "pattern_names", "batch_presence", "normalize_present",
           "apply_present", "figures_by_pattern", "PartialReader"]


def normalize_present(normalizer_cls, column: str, arrays: dict[str, np.ndarray], has: dict[str, np.ndarray],
                      train: np.ndarray, groups: np.ndarray):
    """Fit and apply ``--normalize`` on the clips having each set (absent rows stay zero).

    Returns:
        ``(normalizer, {set: (N, D) float32}, report)``.
    """
    if all(h.all() for h in has.values()):
        normalizer = normalizer_cls.fit(column, arrays, np.flatnonzero(train))
        out, report = normalizer.apply(arrays, groups)
        return normalizer, out, report
    fallback = {}
    for name, x in arrays.items():
        rows = has[name]
        fallback.update(normalizer_cls.fit(column, {name: x[rows]}, np.flatnonzero(train[rows])).fallback)
    normalizer = normalizer_cls(column, fallback)
    out, report = apply_present(normalizer, arrays, has, groups)
    return normalizer, out, report


def apply_present(normalizer, arrays: dict[str, np.ndarray], has: dict[str, np.ndarray] | None, groups):
    """``normalizer.apply`` per set over the clips having it, so absent (zero) rows never
    enter a group's statistics; absent rows stay zero. Returns ``(arrays, report)``."""
    if has is None or all(h.all() for h in has.values()):
        return normalizer.apply(arrays, groups)
    groups = np.asarray(groups, dtype=object)
    out, report = {}, None
    for name, x in arrays.items():
        rows = has[name]
        full = np.zeros(x.shape, dtype=np.float32)  # (N, D)
        if rows.any():
            done, rep = normalizer.apply({name: x[rows]}, groups[rows])
            full[rows] = done[name]
            report = rep if report is None or rep["clips_own_stats"] > report["clips_own_stats"] else report
        out[name] = full
    return out, report


def figures_by_pattern(y_true: np.ndarray, y_pred: np.ndarray, patterns: Sequence[str],
                       vocabulary: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Headline figures (n, accuracy, weighted F1, macro F1, UAR, WAR) per presence pattern,
    patterns in name order."""
    from .metrics import HEADLINE, classification_metrics

    patterns = np.asarray(list(patterns), dtype=object)
    out = {}
    for name in sorted(set(patterns.tolist())):
        rows = patterns == name
        figures = classification_metrics(np.asarray(y_true)[rows], np.asarray(y_pred)[rows], vocabulary)
        out[name] = {"n": figures["n"], **{k: figures[k] for k in HEADLINE}}
    return out


def presence_matrix(present: dict[str, np.ndarray] | None, encoders: Sequence[str], n: int) -> np.ndarray:
    """``(n, M)`` bool: column ``m`` says which clips have ``encoders[m]`` (None: all)."""
    if present is None:
        return np.ones((n, len(encoders)), dtype=bool)
    return np.stack([np.asarray(present[e], dtype=bool) if e in present else np.ones(n, dtype=bool)
                     for e in encoders], axis=1).reshape(n, len(encoders))  # (n, M)


def presence_names(encoders: Sequence[str], matrix: np.ndarray) -> list[str]:
    """The sets each clip has, ``+``-joined in run order (``egemaps+mae``), one per row."""
    return ["+".join(e for e, ok in zip(encoders, row) if ok) for row in np.asarray(matrix, dtype=bool)]


def pattern_names(encoders: Sequence[str], matrix: np.ndarray) -> list[str]:
    """A presence pattern per row: ``both`` / ``all`` (every set), ``<set> only``, or the
    ``+``-joined sets a clip has (``none`` for a clip with none)."""
    everything = "both" if len(encoders) == 2 else "all"
    out = []
    for row in np.asarray(matrix, dtype=bool):
        have = [e for e, ok in zip(encoders, row) if ok]
        out.append(everything if len(have) == len(encoders) else
                   "none" if not have else f"{have[0]} only" if len(have) == 1 else "+".join(have))
    return out


def batch_presence(batch: dict[str, Any], encoders: Sequence[str]):
    """The ``(B, M)`` bool presence mask of a batch (None: the batch has no mask, all present)."""
    import torch

    present = batch.get("present")
    if not present:
        return None
    n = len(batch[encoders[0]])
    return torch.stack([present[e] if e in present else torch.ones(n, dtype=torch.bool)
                        for e in encoders], dim=1)  # (B, M)


class PartialReader:
    """Streaming batches over clips lacking some feature sets: one
    :class:`featurestore.reader.FeatureReader` per set over the clips having it; absent
    rows are zeros and ``batch["present"]`` says which (same interface as TensorBatches).
    """

    def __init__(self, store_uri: str, encoders: Sequence[str], clip_ids: list[str],
                 present: dict[str, np.ndarray], labels: np.ndarray | None, *, dims: dict[str, int]):
        from featurestore.reader import FeatureReader

        self.n = len(clip_ids)
        self.present = {e: np.asarray(present[e], dtype=bool) for e in encoders}
        self.readers = {e: FeatureReader(store_uri, [e], clip_ids=[c for c, ok in zip(clip_ids, self.present[e]) if ok])
                        for e in encoders if self.present[e].any()}
        self.dims = {e: int(dims[e]) for e in encoders}
        # Row of each clip in its set's reader (-1: absent).
        self.position = {e: np.where(p, np.cumsum(p) - 1, -1) for e, p in self.present.items()}
        self.labels = labels

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, indices) -> dict[str, Any]:
        import torch

        idx = np.atleast_1d(np.asarray(indices, dtype=np.int64))  # (B,)
        batch: dict[str, Any] = {"index": torch.from_numpy(idx), "present": {}}
        for name in self.present:
            pos = self.position[name][idx]  # (B,)
            has = pos >= 0
            vectors = torch.zeros(len(idx), self.dims[name])  # (B, D)
            if has.any():
                vectors[torch.from_numpy(has)] = self.readers[name][pos[has]][name].float()
            batch[name] = vectors
            batch["present"][name] = torch.from_numpy(has)
        if self.labels is not None:
            batch["label"] = torch.from_numpy(np.asarray(self.labels)[idx])
        return batch
