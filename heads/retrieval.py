"""Retrieval quality as a figure: P@k across groups for raw, group-normalised and learned vectors.

P@k is the label agreement of a query's ``k`` nearest neighbours (cosine). Queries come
from held-out groups (the test split of a run trained with ``--split-by``; every clip
without a run) and neighbours from OTHER groups only, so a speaker never finds itself:
the figure says whether ``emofs similar`` finds the same emotion in another voice.

Vectors are prepared exactly as an index does (:mod:`featurestore.index.vectors`):

- ``raw``: the feature set, z-scored with all rows' statistics (``index build``);
- ``normalized``: each group z-scored with its own statistics (``index build --normalize``);
- ``learned``: a run's fused projection (:mod:`heads.embed`), z-scored like ``raw``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from featurestore.errors import InputError
from featurestore.groupnorm import MIN_GROUP_CLIPS, group_values
from featurestore.index.vectors import aligned_parts, feature_stats, fuse_by_group, fuse_vectors, group_spec
from featurestore.store import Store

log = logging.getLogger(__name__)

__all__ = ["precision_at_k", "retrieval_eval"]

_QUERY_CHUNK = 512


def precision_at_k(vectors: np.ndarray, labels: Sequence[Any], groups: Sequence[Any], k: int = 10,
                   queries: np.ndarray | None = None) -> float:
    """Mean label agreement of each query's ``k`` nearest rows of other groups (cosine).

    Args:
        vectors: ``(N, D)`` vectors (L2-normalised here; prepare them beforehand).
        labels: ``(N,)`` labels.
        groups: ``(N,)`` group values; a query's own group is never a neighbour.
        k: neighbours per query.
        queries: row indices of the queries (default: every row).

    Returns:
        P@k in [0, 1] (queries with fewer than ``k`` candidates use those they have).

    Raises:
        InputError: ``k < 1``, or no query has a neighbour in another group.
    """
    if k < 1:
        raise InputError(f"-k must be >= 1 (got {k})")
    x = np.asarray(vectors, dtype=np.float32)  # (N, D)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    labels = np.asarray([str(v) for v in labels], dtype=object)
    codes = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)[1]  # (N,)
    rows = np.arange(len(x)) if queries is None else np.asarray(queries, dtype=np.int64)
    scores = []
    for start in range(0, len(rows), _QUERY_CHUNK):
        q = rows[start:start + _QUERY_CHUNK]
        sim = x[q] @ x.T  # (B, N)
        sim[codes[q][:, None] == codes[None, :]] = -np.inf  # own group: never a neighbour
        kk = min(k, len(x))
        top = np.argpartition(-sim, kk - 1, axis=1)[:, :kk]  # (B, kk), unordered
        for i, cand in enumerate(top):
            cand = cand[np.isfinite(sim[i, cand])]
            if len(cand):
                scores.append(float(np.mean(labels[cand] == labels[q[i]])))
    if not scores:
        raise InputError("no query has a neighbour in another group: P@k needs at least two groups")
    return float(np.mean(scores))


def _z_cosine(parts: list[np.ndarray]) -> np.ndarray:
    """The index's default preparation: global z-score, then unit length (equal weights)."""
    return fuse_vectors(parts, [1.0] * len(parts), feature_stats(parts))  # (N, sum D)


def retrieval_eval(
    store: Store,
    encoders: Sequence[str] | None = None,
    *,
    run: str | Path | None = None,
    group: str = "speaker",
    label: str = "label",
    k: int = 10,
    where: str | None = None,
    min_group_clips: int = MIN_GROUP_CLIPS,
) -> dict[str, Any]:
    """P@k across groups for raw, group-normalised and (with ``run``) learned vectors.

    Args:
        store: the store.
        encoders: feature sets (fused with equal weights); default: the run's.
        run: a head run; its test split gives the queries, its fused projection the
            ``learned`` space. Without it every clip is a query and there is no
            ``learned`` figure.
        group: the clip column of the groups (speakers).
        label: the clip column compared.
        k: neighbours per query.
        where: SQL filter on clip columns (the clips taking part).
        min_group_clips: smallest group normalised with its own statistics.

    Returns:
        ``{"k", "group", "clips", "groups", "queries", "query_groups", "chance",
        "p_at_k": {"raw", "normalized"[, "learned"]}}``; ``chance`` is the P@k of random
        neighbours (sum of squared label shares).

    Raises:
        InputError: no encoders, a missing column, fewer than two groups, no test
            clips in the run.
    """
    loaded = None
    if run is not None:
        from .predict import load_run

        loaded = load_run(run)
        encoders = list(encoders or loaded.config.encoders)
    if not encoders:
        raise InputError("pass --encoders (feature sets to compare) or a run")
    frame = store.clips(where=where)
    for column in (group, label):
        if column not in frame.columns:
            raise InputError(f"clips have no {column!r} column (columns: {', '.join(frame.columns)}): "
                             "ingest with --labels a CSV that has it")
    frame = frame.filter(frame[label].is_not_null())
    ids, parts = aligned_parts(store, list(encoders), clip_ids=frame["clip_id"].to_list())
    if not ids:
        raise InputError(f"no labelled clip has features for all of {', '.join(encoders)}: run `emofs extract`")
    lookup = {c: (g, lab) for c, g, lab in zip(frame["clip_id"].to_list(), frame[group].to_list(),
                                                 frame[label].cast(str).to_list())}
    groups = group_values([lookup[c][0] for c in ids])
    labels = [lookup[c][1] for c in ids]
    queries = np.arange(len(ids))
    if loaded is not None:
        queries = _test_rows(Path(run), ids)
    figures = {"raw": precision_at_k(_z_cosine(parts), labels, groups, k, queries)}
    spec = group_spec(parts, groups, group, min_group_clips)
    normed = fuse_by_group(parts, [1.0] * len(parts), groups, feature_stats(parts), spec)
    figures["normalized"] = precision_at_k(normed, labels, groups, k, queries)
    if loaded is not None:
        from .embed import run_embeddings

        kept, learned = run_embeddings(store, loaded, ids)
        if len(kept) != len(ids):  # the run read the same feature sets: never happens unless edited
            raise InputError("the run's feature sets cover fewer clips than --encoders: pass the run's encoders")
        figures["learned"] = precision_at_k(_z_cosine([learned]), labels, groups, k, queries)
    shares = np.unique(np.asarray(labels, dtype=object).astype(str), return_counts=True)[1] / len(labels)
    return {"k": k, "group": group, "clips": len(ids), "groups": len(set(groups.tolist())),
            "queries": int(len(queries)), "query_groups": len(set(groups[queries].tolist())),
            "chance": round(float((shares ** 2).sum()), 4),
            "p_at_k": {name: round(v, 4) for name, v in figures.items()}}


def _test_rows(run_dir: Path, ids: list[str]) -> np.ndarray:
    """Rows of ``ids`` in the run's test split (``splits.csv``)."""
    import polars as pl

    path = run_dir / "splits.csv"
    if not path.is_file():
        raise InputError(f"{run_dir} has no splits.csv (a cross-validation parent?): pass one fold's run")
    splits = pl.read_csv(path, schema_overrides={"clip_id": pl.Utf8, "split": pl.Utf8})
    test = set(splits.filter(pl.col("split") == "test")["clip_id"].to_list())
    rows = np.array([i for i, c in enumerate(ids) if c in test], dtype=np.int64)
    if not len(rows):
        raise InputError(f"run {run_dir} has no test clip among the selected clips: train it with a test split")
    return rows
