"""Vector preparation: feature-set state, standardisation, group normalisation, fusion.

Similarity is cosine: every encoder's vector is L2-normalised; a fused index concatenates
the normalised vectors scaled by ``sqrt(w_i / sum(w))`` so the inner product of two fused
vectors is the weighted mean of the per-encoder cosines (a score in ``[-1, 1]``).

Before that, each dimension is z-scored (``standardize``) with the indexed rows' mean /
std, or (``--normalize speaker``) with the mean / std of the row's own group
(:mod:`featurestore.groupnorm`); small or unknown groups use the indexed rows' statistics.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from typing import Any, Sequence

import numpy as np

from ..errors import InputError, MissingFeatureSetError
from ..features import read_features
from ..groupnorm import MIN_GROUP_CLIPS, group_keys, group_statistics, mean_std, stats_to_json
from ..inventory import feature_set_info
from ..schema import features_name
from ..store import Store, sql_quote
from ..versioned import manifest_stamp

log = logging.getLogger(__name__)

__all__ = [
    "l2_normalise",
    "feature_stats",
    "fuse_vectors",
    "fused_matrix",
    "aligned_parts",
    "clip_groups",
    "group_digest",
    "group_spec",
    "group_query_stats",
    "fuse_by_group",
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
    return [stats_to_json(mean_std(part)) for part in parts]  # one per (N, D_i) part


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
    """Fingerprint, dataset version (and its manifest stamp: a local store), dim and row
    count of feature set ``encoder``.

    Raises:
        MissingFeatureSetError: the store has no such feature set (names the extract
            command).
    """
    if store.dataset(features_name(encoder)) is None:
        raise MissingFeatureSetError.of(store, encoder)
    fs_info = feature_set_info(store, encoder)
    return {"fingerprint": fs_info["fingerprint"], "version": fs_info["version"],
            "stamp": manifest_stamp(store, features_name(encoder), fs_info["version"]),
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


def aligned_parts(
    store: Store,
    encoders: Sequence[str],
    *,
    clip_ids: Sequence[str] | None = None,
    fingerprints: dict[str, str | None] | None = None,
    nonfinite: dict[str, int] | None = None,
) -> tuple[list[str], list[np.ndarray]]:
    """The raw vectors of ``encoders`` for the clips present in all of them.

    Only rows written with the feature set's current spec (``fingerprints``) are used. Rows
    holding NaN or inf are left out (one would turn every standardised or fused vector into
    NaN), with a warning that names ``emofs check --repair``.

    Args:
        nonfinite: when given, gets the number of NaN/inf rows left out per encoder.

    Returns:
        ``(clip_ids, parts)``: ids in a stable (sorted) order and one ``(N, D_i)`` array
        per encoder, rows in that order.
    """
    fingerprints = fingerprints or {}
    wanted = None if clip_ids is None else list(clip_ids)
    per_encoder = []
    bad: set[str] = set()
    for enc in encoders:
        fp = fingerprints.get(enc)
        where = f"fingerprint = {sql_quote(fp)}" if fp else None
        matrix = read_features(store, enc, clip_ids=wanted, where=where)
        finite = np.isfinite(matrix.vectors).all(axis=1) if matrix.vectors.ndim == 2 else np.ones(0, bool)
        if not finite.all():
            dropped = [c for c, ok in zip(matrix.clip_ids, finite) if not ok]
            bad.update(dropped)
            if nonfinite is not None:
                nonfinite[enc] = len(dropped)
            log.warning(f"{len(dropped)} rows of {enc!r} hold NaN or inf and are left out (e.g. "
                        f"{', '.join(dropped[:3])}): run `emofs check --repair` to quarantine them")
        per_encoder.append(matrix)
    common = set(per_encoder[0].clip_ids)
    for matrix in per_encoder[1:]:
        common &= set(matrix.clip_ids)
    common -= bad
    ordered = sorted(common)
    parts = []
    for matrix in per_encoder:
        if not ordered:
            dim = matrix.vectors.shape[1] if matrix.vectors.ndim == 2 else 0
            parts.append(np.zeros((0, dim), dtype=np.float32))
            continue
        pos = {c: i for i, c in enumerate(matrix.clip_ids)}
        rows = np.fromiter((pos[c] for c in ordered), dtype=np.int64, count=len(ordered))
        parts.append(matrix.vectors[rows])  # (N, D_i)
    return ordered, parts


def fused_matrix(
    store: Store,
    encoders: Sequence[str],
    weights: Sequence[float],
    *,
    clip_ids: Sequence[str] | None = None,
    fingerprints: dict[str, str | None] | None = None,
    stats: Sequence[dict[str, list[float]]] | str | None = None,
    nonfinite: dict[str, int] | None = None,
) -> tuple[list[str], np.ndarray, list[dict[str, list[float]]] | None]:
    """Read and fuse the vectors of ``encoders`` for the clips present in all of them.

    Only rows written with the feature set's current spec (``fingerprints``) are used.
    ``stats``: per-encoder standardisation to apply, ``"compute"`` to derive it from
    these rows, or None for plain cosine. Rows holding NaN or inf are left out (counted
    per encoder in ``nonfinite`` when given).

    Returns:
        ``(clip_ids, vectors, stats)``: ids in a stable (sorted) order, ``(N, sum D_i)``
        float32 fused unit vectors, and the standardisation used.
    """
    ordered, parts = aligned_parts(store, encoders, clip_ids=clip_ids, fingerprints=fingerprints,
                                   nonfinite=nonfinite)
    if not ordered:
        dim = sum(p.shape[1] for p in parts)
        return [], np.zeros((0, dim), dtype=np.float32), None
    if stats == "compute":
        stats = feature_stats(parts)
    return ordered, fuse_vectors(parts, weights, stats), stats


# ------------------------------------------------------------------ group normalisation
def clip_groups(store: Store, column: str, clip_ids: Sequence[str]) -> list[Any]:
    """The ``column`` value of each of ``clip_ids`` (None where a clip has none).

    Raises:
        InputError: the clips table has no such column (names the flag and the fix).
    """
    columns = store.clips(limit=1).columns
    if column not in columns:
        raise InputError(
            f"--normalize {column}: clips have no {column!r} column (columns: {', '.join(columns)}): "
            f"ingest with --labels a CSV that has one, or pick another column")
    frame = store.clips(columns=["clip_id", column])
    lookup = dict(zip(frame["clip_id"].to_list(), frame[column].to_list()))
    return [lookup.get(c) for c in clip_ids]


def group_digest(ids: Sequence[str], groups: Sequence[Any]) -> str:
    """A hash of which clip is in which group (a change rebuilds a normalised index)."""
    pairs = json.dumps([[c, None if g is None else str(g)] for c, g in zip(ids, groups)])
    return hashlib.sha256(pairs.encode()).hexdigest()[:16]


def group_spec(parts: Sequence[np.ndarray], groups: Sequence[Any], column: str,
               min_clips: int = MIN_GROUP_CLIPS) -> dict[str, Any]:
    """An index's group normalisation (kept in its manifest as ``normalize``).

    Args:
        parts: one ``(N, D_i)`` array of raw vectors per encoder.
        groups: ``(N,)`` group values of the rows (None: no group).
        column: the clip column the groups come from.
        min_clips: smallest group given its own statistics.

    Returns:
        ``{"column", "min_clips", "groups": {group: [{"mean", "std"} per encoder]},
        "fallback_groups": {group: rows}}``.
    """
    per_group: dict[str, list[dict[str, list[float]]]] = {}
    fell_back: dict[str, int] = {}
    for part in parts:
        own, fell_back = group_statistics(part, groups, min_clips)
        for g, stats in own.items():
            per_group.setdefault(g, []).append(stats_to_json(stats))
    return {"column": column, "min_clips": int(min_clips), "groups": per_group,
            "fallback_groups": fell_back}


def group_query_stats(standardize: Sequence[dict[str, list[float]]] | None,
                      normalize: dict[str, Any] | None,
                      group: Any) -> Sequence[dict[str, list[float]]] | None:
    """Per-encoder statistics for a vector of ``group``: its group's own, or the fallback.

    Args:
        standardize: the index's per-encoder statistics over all indexed rows.
        normalize: the index's :func:`group_spec` (None: no group normalisation).
        group: the vector's group value (None: unknown).
    """
    if not normalize or group is None:
        return standardize
    return normalize["groups"].get(str(group), standardize)


def fuse_by_group(parts: Sequence[np.ndarray], weights: Sequence[float], groups: Sequence[Any],
                  standardize: Sequence[dict[str, list[float]]] | None,
                  normalize: dict[str, Any] | None) -> np.ndarray:
    """:func:`fuse_vectors` with each row z-scored by its group's statistics.

    Returns:
        ``(N, sum D_i)`` float32 unit vectors, rows in the order of ``parts``.
    """
    n = len(parts[0])
    out = np.zeros((n, sum(p.shape[1] for p in parts)), dtype=np.float32)  # (N, sum D_i)
    keys = group_keys(groups)
    for key in np.unique(keys):
        rows = np.flatnonzero(keys == key)
        group = None if groups[rows[0]] is None else str(key)
        stats = group_query_stats(standardize, normalize, group)
        out[rows] = fuse_vectors([np.asarray(p)[rows] for p in parts], weights, stats)
    return out
