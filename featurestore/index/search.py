"""Top-k search in a loaded index under an allowed-row filter.

A ``where`` filter over clip columns becomes a FAISS id selector; when the approximate
search returns fewer than ``k`` allowed rows, the search widens (nprobe / efSearch) and
finally falls back to an exact scan of the allowed rows, so ``k`` results come back
whenever ``k`` exist. Small filtered subsets are scanned exactly from the start.

Every score is a cosine of unit vectors: one outside [-1, 1] (beyond float error) means
the index's bytes are damaged, and the search raises :class:`IndexCorruptError` (naming
the rebuild) instead of ranking garbage.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import IndexCorruptError
from .catalog import build_command
from .load import LoadedIndex

__all__ = ["search_index", "check_scores", "EXACT_SUBSET_MAX", "SCORE_TOLERANCE"]

#: Filters selecting at most this many vector elements (rows x dim, e.g. 16k rows at
#: d=1024) are scanned exactly: a few ms, and exact even when the filter is correlated with
#: the query's neighbourhood (where graph / list search under a selector loses recall).
EXACT_SUBSET_MAX = 16 * 1024 * 1024
_MAX_EF = 4096
_MAX_FILTER_BOOST = 64.0
_RECONSTRUCT_BATCH = 8192
#: How far past [-1, 1] a cosine may stray by float error before the index is called corrupt.
SCORE_TOLERANCE = 1e-3


def search_index(
    loaded: LoadedIndex,
    vector: np.ndarray,
    k: int,
    *,
    allowed: np.ndarray | None = None,
    exclude: set[int] | frozenset = frozenset(),
) -> list[tuple[int, float]]:
    """Top-``k`` ``(row, score)`` for one query, honouring an allowed-row set.

    Returns ``min(k, available)`` hits (available = allowed rows minus ``exclude``),
    widening the approximate search and falling back to an exact scan if needed.

    Args:
        loaded: the index.
        vector: ``(D,)`` query (already fused and normalised like the indexed rows).
        k: number of hits wanted.
        allowed: sorted int64 rows the hits must come from (None: all rows).
        exclude: rows never returned (e.g. the query clip itself).

    Returns:
        ``(row, score)`` pairs, best first.

    Raises:
        IndexCorruptError: a score is not a cosine (the index bytes are damaged).
    """
    return check_scores(loaded, _search(loaded, vector, k, allowed, exclude))


def check_scores(loaded: LoadedIndex, hits: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """``hits`` unchanged when every score is a cosine, else :class:`IndexCorruptError`.

    Args:
        loaded: the index searched.
        hits: its ``(row, score)`` results.

    Raises:
        IndexCorruptError: a score is NaN or outside ``[-1, 1]`` by more than
            :data:`SCORE_TOLERANCE` (names the rebuild command).
    """
    limit = 1.0 + SCORE_TOLERANCE
    bad = [s for _, s in hits if not -limit <= s <= limit]  # NaN fails both comparisons
    if bad:
        raise IndexCorruptError(
            f"index {loaded.name!r} returned a score of {bad[0]:.3g}, not a cosine (its "
            f"vectors are damaged): rebuild with `{build_command(loaded.manifest)} --rebuild`")
    return hits


def _search(loaded: LoadedIndex, vector: np.ndarray, k: int, allowed: np.ndarray | None,
            exclude) -> list[tuple[int, float]]:
    index = loaded.index
    query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)  # (1, D)
    n_pool = index.ntotal if allowed is None else len(allowed)
    n_excl = len(exclude) if allowed is None else len(set(allowed.tolist()) & set(exclude))
    target = min(k, n_pool - n_excl)
    if target <= 0:
        return []
    fetch = min(n_pool, target + len(exclude))
    if allowed is not None and len(allowed) * index.d <= EXACT_SUBSET_MAX:
        return _exact_subset(loaded, query, allowed, target, exclude)
    kind = loaded.kind
    param = _initial_param(loaded)
    if allowed is not None and param is not None:
        # A selective filter leaves fewer candidates per probed list / graph hop: widen the
        # search by the inverse selectivity (capped) so recall holds under the filter.
        boost = min(_MAX_FILTER_BOOST, index.ntotal / max(1, len(allowed)))
        param = int(math.ceil(param * boost))
        if kind == "ivf":
            param = min(param, index.nlist)
    preset = param
    while True:
        # the index's own setting needs no parameters object (building one is a call into
        # FAISS that lets go of the GIL: under concurrent searches, a wait to get it back)
        plain = allowed is None and param == preset and (kind == "ivf" or (kind == "hnsw" and param >= fetch))
        params = None if plain else _search_params(kind, allowed, param, fetch)
        searcher = loaded.gpu_index if (allowed is None and loaded.gpu_index is not None) else index
        if searcher is not index:
            _set_gpu_param(searcher, kind, param)
            scores, rows = searcher.search(query, fetch)  # (1, fetch)
        else:
            scores, rows = index.search(query, fetch, params=params)  # (1, fetch)
        hits = [(int(r), float(s)) for r, s in zip(rows[0], scores[0]) if r >= 0 and int(r) not in exclude]
        if len(hits) >= target:
            return hits[:target]
        widened = _widen(loaded, param)
        if widened is None:
            break
        param = widened
    pool = allowed if allowed is not None else np.arange(index.ntotal, dtype=np.int64)
    return _exact_subset(loaded, query, pool, target, exclude)


def _initial_param(loaded: LoadedIndex) -> int | None:
    if loaded.kind == "ivf":
        return int(loaded.index.nprobe)
    if loaded.kind == "hnsw":
        return int(loaded.index.hnsw.efSearch)
    return None


def _widen(loaded: LoadedIndex, param: int | None) -> int | None:
    if loaded.kind == "ivf" and param < loaded.index.nlist:
        return min(loaded.index.nlist, param * 4)
    if loaded.kind == "hnsw" and param < min(_MAX_EF, loaded.index.ntotal):
        return min(_MAX_EF, param * 4)
    return None


def _search_params(kind: str, allowed: np.ndarray | None, param: int | None, fetch: int):
    import faiss

    sel = faiss.IDSelectorBatch(allowed) if allowed is not None else None
    if kind == "ivf":
        return faiss.SearchParametersIVF(sel=sel, nprobe=int(param)) if sel is not None \
            else faiss.SearchParametersIVF(nprobe=int(param))
    if kind == "hnsw":
        ef = max(int(param), fetch)
        return faiss.SearchParametersHNSW(sel=sel, efSearch=ef) if sel is not None \
            else faiss.SearchParametersHNSW(efSearch=ef)
    return faiss.SearchParameters(sel=sel) if sel is not None else None


def _set_gpu_param(gpu_index, kind: str, param: int | None) -> None:
    if kind == "ivf" and param is not None:
        try:
            gpu_index.nprobe = int(param)
        except AttributeError:  # older GPU wrappers
            gpu_index.setNumProbes(int(param))


def _exact_subset(loaded: LoadedIndex, query: np.ndarray, rows: np.ndarray, target: int,
                  exclude) -> list[tuple[int, float]]:
    index = loaded.index
    loaded.ensure_direct_map()  # IVF lists need a row -> (list, offset) map to reconstruct
    rows = np.asarray(rows, dtype=np.int64)
    if exclude:
        rows = rows[~np.isin(rows, np.fromiter(exclude, dtype=np.int64))]
    scores = np.empty(len(rows), dtype=np.float32)
    for start in range(0, len(rows), _RECONSTRUCT_BATCH):
        vectors = index.reconstruct_batch(rows[start : start + _RECONSTRUCT_BATCH])  # (B, D)
        with np.errstate(invalid="ignore", over="ignore"):  # damaged bytes: check_scores says so
            scores[start : start + len(vectors)] = vectors @ query[0]  # (B,)
    take = min(target, len(rows))
    top = np.argpartition(-scores, take - 1)[:take] if take < len(rows) else np.arange(len(rows))
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(int(rows[i]), float(scores[i])) for i in top]
