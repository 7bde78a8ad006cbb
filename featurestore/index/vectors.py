"""Vector preparation: feature-set state, standardisation and weighted fusion.

Similarity is cosine: every encoder's vector is L2-normalised; a fused index concatenates
the normalised vectors scaled by ``sqrt(w_i / sum(w))`` so the inner product of two fused
vectors is the weighted mean of the per-encoder cosines (a score in ``[-1, 1]``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..errors import MissingFeatureSetError
from ..features import read_features
from ..inventory import feature_set_info
from ..schema import features_name
from ..store import Store, sql_quote

__all__ = [
    "l2_normalise",
    "feature_stats",
    "fuse_vectors",
    "fused_matrix",
    "feature_state",
    "current_clip_ids",
    "common_clip_ids",
]


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit length (zero rows stay zero), as float32.

    Args:
        x: ``(N, D)`` vectors.

    Returns:
        ``(N, D)`` float32.
    """
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # (N, 1)
    np.maximum(norms, 1e-12, out=norms)
    return (x / norms).astype(np.float32, copy=False)


def feature_stats(parts: Sequence[np.ndarray]) -> list[dict[str, list[float]]]:
    """Per-encoder, per-dimension mean and std (constant dims get std 1)."""
    stats = []
    for part in parts:
        part = np.asarray(part, dtype=np.float64)  # (N, D_i)
        std = part.std(axis=0)
        std[std < 1e-8] = 1.0
        stats.append({"mean": part.mean(axis=0).tolist(), "std": std.tolist()})
    return stats


def fuse_vectors(
    parts: Sequence[np.ndarray],
    weights: Sequence[float],
    stats: Sequence[dict[str, list[float]]] | None = None,
) -> np.ndarray:
    """Weighted concatenation of L2-normalised vectors, normalised to unit length.

    Args:
        parts: one ``(N, D_i)`` array per encoder (same rows in the same order).
        weights: one positive weight per encoder.
        stats: optional per-encoder ``{"mean", "std"}`` (from :func:`feature_stats`)
            applied before normalising.

    Returns:
        ``(N, sum D_i)`` float32; the inner product of two rows is the weighted mean of
        the per-encoder cosines.
    """
    total = float(sum(weights))
    if stats is not None:
        parts = [
            (np.asarray(p, dtype=np.float32) - np.asarray(st["mean"], np.float32))
            / np.asarray(st["std"], np.float32)
            for p, st in zip(parts, stats)
        ]
    scaled = [
        l2_normalise(np.asarray(p, dtype=np.float32)) * np.float32(math.sqrt(w / total))
        for p, w in zip(parts, weights)
    ]
    fused = scaled[0] if len(scaled) == 1 else np.concatenate(scaled, axis=1)  # (N, sum D)
    return np.ascontiguousarray(fused, dtype=np.float32)


def feature_state(store: Store, encoder: str) -> dict[str, Any]:
    """Fingerprint, dataset version, dim and row count of feature set ``encoder``.

    Raises:
        MissingFeatureSetError: the store has no such feature set (names the extract
            command).
    """
    if store.dataset(features_name(encoder)) is None:
        raise MissingFeatureSetError.of(store, encoder)
    fs_info = feature_set_info(store, encoder)
    return {"fingerprint": fs_info["fingerprint"], "version": fs_info["version"],
            "dim": fs_info["dim"], "rows": fs_info["rows"]}


def current_clip_ids(store: Store, encoder: str, fingerprint: str | None) -> list[str]:
    """Clip ids of ``encoder``'s rows written with spec ``fingerprint`` (all when None)."""
    where = f"fingerprint = {sql_quote(fingerprint)}" if fingerprint else None
    table = store.table(features_name(encoder), columns=["clip_id"], where=where)
    return [] if table is None else table.column("clip_id").to_pylist()


def common_clip_ids(store: Store, encoders: Sequence[str],
                    fingerprints: dict[str, Any]) -> list[str]:
    """Sorted clip ids with current-spec features in every one of ``encoders``."""
    common: set[str] | None = None
    for enc in encoders:
        ids = set(current_clip_ids(store, enc, fingerprints.get(enc)))
        common = ids if common is None else common & ids
    return sorted(common or ())


def fused_matrix(
    store: Store,
    encoders: Sequence[str],
    weights: Sequence[float],
    *,
    clip_ids: Sequence[str] | None = None,
    fingerprints: dict[str, str | None] | None = None,
    stats: Sequence[dict[str, list[float]]] | str | None = None,
) -> tuple[list[str], np.ndarray, list[dict[str, list[float]]] | None]:
    """Read and fuse the vectors of ``encoders`` for the clips present in all of them.

    Only rows written with the feature set's current spec (``fingerprints``) are used.
    ``stats``: per-encoder standardisation to apply, ``"compute"`` to derive it from
    these rows, or None for plain cosine.

    Returns:
        ``(clip_ids, vectors, stats)``: ids in a stable (sorted) order, ``(N, sum D_i)``
        float32 fused unit vectors, and the standardisation used.
    """
    fingerprints = fingerprints or {}
    wanted = None if clip_ids is None else list(clip_ids)
    per_encoder = []
    for enc in encoders:
        fp = fingerprints.get(enc)
        where = f"fingerprint = {sql_quote(fp)}" if fp else None
        matrix = read_features(store, enc, clip_ids=wanted, where=where)
        per_encoder.append(matrix)
    common = set(per_encoder[0].clip_ids)
    for matrix in per_encoder[1:]:
        common &= set(matrix.clip_ids)
    ordered = sorted(common)
    parts = []
    for matrix in per_encoder:
        pos = {c: i for i, c in enumerate(matrix.clip_ids)}
        rows = np.fromiter((pos[c] for c in ordered), dtype=np.int64, count=len(ordered))
        parts.append(matrix.vectors[rows])  # (N, D_i)
    if not ordered:
        dim = sum(m.vectors.shape[1] if m.vectors.ndim == 2 else 0 for m in per_encoder)
        return [], np.zeros((0, dim), dtype=np.float32), None
    if stats == "compute":
        stats = feature_stats(parts)
    return ordered, fuse_vectors(parts, weights, stats), stats
