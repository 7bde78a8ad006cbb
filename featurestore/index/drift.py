"""Does an index still mean what its feature sets say? Drift beyond the checksums.

Checksums prove the bytes are the bytes a build wrote; they cannot prove the bytes are
*right*: an id map rotated by a tool that also updated its checksum, vectors written for
the wrong clips, rows of clips that never had features. :func:`index_drift` compares an
index with the feature sets it was built from:

- the id map: no clip twice; when every feature set is still at the version the index
  was built from, every indexed clip has features there;
- a sample of rows (seeded, always the first and the last): each sampled clip's vector is
  rebuilt from its features exactly as the build made it (standardised, group-normalised,
  fused) and searched in the index; it must find its own row first (a tie with an equal
  vector counts). An approximate index (IVF, HNSW) that misses it passes when the vector
  stored at the clip's row is the clip's own.

Clips whose features changed spec since the build, or were removed, are staleness, not
drift (``emofs index list`` shows them and ``index build`` brings the index up to date):
they are left out of the sample.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError, StoreError
from ..store import Store
from .catalog import at_built_version, build_command
from .load import LoadedIndex
from .vectors import (
    aligned_parts,
    clip_groups,
    common_clip_ids,
    feature_state,
    fuse_by_group,
    fuse_vectors,
    group_digest,
)

__all__ = ["index_drift", "SAMPLE"]

#: Rows re-searched per check.
SAMPLE = 32
#: Scores this close to the best count as a tie (two clips with the same vector).
_TIE = 1e-4
#: Cosine between a stored row and its clip's rebuilt vector above which they are the same.
_SAME = 0.999


def index_drift(store: Store, loaded: LoadedIndex, sample: int = SAMPLE) -> str | None:
    """Why ``loaded`` no longer matches its feature sets, or None when it does.

    Args:
        store: the store the index belongs to.
        loaded: the index, already checked against its manifest (:func:`load_index`).
        sample: rows re-searched.

    Returns:
        What is wrong as a predicate of the index (``"has drifted from its feature sets:
        ..."``; one line naming the rebuild command), or None.
    """
    manifest = loaded.manifest
    hint = f"rebuild with `{build_command(manifest)} --rebuild`"
    ids = loaded.clip_ids
    twice = len(ids) - len(set(ids))
    if twice:
        return f"lists {twice} clips more than once in its id map: {hint}"
    encoders = list(manifest.get("encoders") or [])
    built = manifest.get("feature_sets") or {}
    fingerprints = {enc: (built.get(enc) or {}).get("fingerprint") for enc in encoders}
    for enc in encoders:
        try:
            state = feature_state(store, enc)
        except StoreError:
            return None  # a feature set is gone: stale (index list says so), nothing to compare
        if state["fingerprint"] != fingerprints[enc]:
            return None  # a changed spec: stale, rebuilt by `index build`
    unchanged = all(at_built_version(store, enc, built.get(enc) or {}) for enc in encoders)
    if unchanged:
        have = set(common_clip_ids(store, encoders, fingerprints))
        missing = [c for c in ids if c not in have]
        if missing:
            return (f"holds {len(missing)} clips that have no features in {', '.join(encoders)} "
                    f"(e.g. {', '.join(missing[:3])}): {hint}")
    if not ids:
        return None
    normalize = manifest.get("normalize")
    if normalize:
        try:
            groups = clip_groups(store, normalize["column"], ids)
        except InputError:
            return None  # the column is gone: stale, `index build` says so
        if group_digest(ids, groups) != normalize.get("digest"):
            return None  # the clips' groups changed: stale, rebuilt by `index build`
    rows = _sample_rows(len(ids), sample)
    got, vectors = _rebuilt_vectors(store, loaded, [ids[r] for r in rows], fingerprints)
    if not got:
        return None
    row_of = loaded.row_of()
    wrong = []
    for clip_id, vector in zip(got, vectors):
        found = _finds_itself(loaded, row_of[clip_id], vector)
        if found is not None:
            wrong.append((clip_id, found))
    if not wrong:
        return None
    clip_id, found = wrong[0]
    return (f"has drifted from its feature sets: {len(wrong)} of {len(got)} sampled clips do not "
            f"find their own vector (e.g. {clip_id} finds {found}): {hint}")


def _sample_rows(n: int, sample: int) -> list[int]:
    """Up to ``sample`` distinct rows of ``n``: the first, the last and a seeded draw."""
    if n <= sample:
        return list(range(n))
    drawn = np.random.default_rng(0).choice(n - 2, size=sample - 2, replace=False) + 1
    return sorted({0, n - 1, *map(int, drawn)})


def _rebuilt_vectors(store: Store, loaded: LoadedIndex, clip_ids: list[str],
                     fingerprints: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    """The index's vectors for ``clip_ids`` rebuilt from their features, as a build makes
    them; clips without current features are left out."""
    manifest = loaded.manifest
    got, parts = aligned_parts(store, manifest["encoders"], clip_ids=clip_ids, fingerprints=fingerprints)
    if not got:
        return [], np.zeros((0, loaded.dim), dtype=np.float32)
    weights = manifest["weights"]
    normalize = manifest.get("normalize")
    if normalize:
        groups = clip_groups(store, normalize["column"], got)
        vectors = fuse_by_group(parts, weights, groups, manifest.get("standardize"), normalize)
    else:
        vectors = fuse_vectors(parts, weights, manifest.get("standardize"))
    return got, vectors  # (S, D)


def _finds_itself(loaded: LoadedIndex, row: int, vector: np.ndarray) -> str | None:
    """None when searching ``vector`` finds ``row`` first (or tied first), else the clip
    it found instead."""
    index = loaded.index
    k = min(index.ntotal, 5)
    scores, found = index.search(np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1), k)  # (1, k)
    hits = [(int(r), float(s)) for r, s in zip(found[0], scores[0]) if r >= 0]
    if hits:
        best = hits[0][1]
        if any(r == row and s >= best - _TIE for r, s in hits):
            return None
    if loaded.kind != "flat":  # approximate search may miss: is the stored row the clip's own?
        stored = loaded.reconstruct(row)
        if float(np.dot(stored, vector)) >= _SAME:
            return None
    return loaded.clip_ids[hits[0][0]] if hits else "nothing"
