"""`emofs similar`: nearest clips to a query clip, path or new media file.

The query is resolved to a fused unit vector with the index's encoders and weights, then
searched in the index (cosine). A ``where`` filter over clip columns becomes a FAISS
id selector; when the approximate search returns fewer than ``k`` allowed rows, the
search widens (nprobe / efSearch) and finally falls back to an exact scan of the allowed
rows, so ``k`` results come back whenever ``k`` exist.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import InputError
from .index import (
    DimensionMismatchError,
    LoadedIndex,
    _build_command,
    fuse_vectors,
    index_staleness,
    load_index,
    resolve_index_name,
)
from .schema import CLIPS
from .store import Store, sql_in, sql_quote

log = logging.getLogger(__name__)

__all__ = ["SimilarResult", "find_similar", "similar", "search_index", "neighbour_vote",
           "RESULT_COLUMNS"]

RESULT_COLUMNS = ["rank", "clip_id", "path", "label", "score"]
#: Filters selecting at most this many vector elements (rows x dim, e.g. 16k rows at
#: d=1024) are scanned exactly: a few ms, and exact even when the filter is correlated with
#: the query's neighbourhood (where graph / list search under a selector loses recall).
_EXACT_SUBSET_MAX = 16 * 1024 * 1024
_MAX_EF = 4096
_MAX_FILTER_BOOST = 64.0


@dataclass
class SimilarResult:
    """Neighbours of one query.

    Attributes:
        frame: polars DataFrame with ``rank, clip_id, path, label, score``.
        index: the index searched.
        query: how the query was resolved (``clip_id``, ``uri``, ``source``).
        notes: lines worth telling the user (which index was picked, staleness).
    """

    frame: Any
    index: str
    query: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def vote(self) -> str | None:
        """The neighbour-vote line, e.g. ``"7/10 neighbours: sad"``."""
        return neighbour_vote(self.frame, exclude=self.query.get("clip_id"))


def similar(store: Store, query: str | Path, **kwargs) -> Any:
    """Nearest clips to ``query`` as a polars DataFrame (see :func:`find_similar`)."""
    return find_similar(store, query, **kwargs).frame


def find_similar(
    store: Store,
    query: str | Path,
    *,
    k: int = 10,
    index: str | None = None,
    where: str | None = None,
    include_self: bool = False,
    add: bool = False,
    warn_stale: bool = True,
) -> SimilarResult:
    """Find the ``k`` clips most similar to ``query``.

    Args:
        query: a ``clip_id``, the path of a clip already in the store, or a new media
            file (extracted on the fly with the store's specs; stored only with ``add``).
        k: number of neighbours.
        index: index name; default the store's only index, or the most recently built.
        where: SQL filter over clip columns (``"label = 'sad' AND split = 'train'"``).
        include_self: keep the query clip itself in the results.
        add: ingest and store the features of a new media file.
        warn_stale: warn when the index is behind its feature sets.

    Returns:
        A :class:`SimilarResult` (``.frame`` has ``rank, clip_id, path, label, score``).

    Raises:
        IndexNotFoundError, IndexCorruptError, DimensionMismatchError, InputError.
    """
    if k < 1:
        raise InputError(f"-k must be >= 1 (got {k})")
    name, note = resolve_index_name(store, index)
    notes = [note] if note else []
    loaded = load_index(store, name)
    manifest = loaded.manifest
    if warn_stale:
        stale = index_staleness(store, manifest)
        if stale:
            line = (f"index {name!r} is behind the store ({'; '.join(stale)}): run "
                    f"`{_build_command(manifest)}` to update it")
            log.warning(line)
            notes.append(line)
    resolved = _resolve_query(store, loaded, str(query), add=add)
    vector = resolved.pop("vector")
    if vector.shape != (loaded.dim,):
        raise DimensionMismatchError(
            f"query vector has dim {vector.shape[-1]} but index {name!r} has dim {loaded.dim}: "
            f"rebuild the index with `{_build_command(manifest)} --rebuild`")

    allowed = None
    if where:
        selected = store.clips(where=where, columns=["clip_id"])["clip_id"].to_list()
        row_of = loaded.row_of()
        allowed = np.array(sorted(row_of[c] for c in selected if c in row_of), dtype=np.int64)
        if not len(allowed):
            log.warning(f"no clip in index {name!r} matches --where {where!r}")
    self_row = loaded.row_of().get(resolved.get("clip_id")) if resolved.get("clip_id") else None
    exclude = set() if include_self or self_row is None else {self_row}
    hits = search_index(loaded, vector, k, allowed=allowed, exclude=exclude)
    if include_self and self_row is not None and (allowed is None or self_row in set(allowed.tolist())):
        if self_row not in {r for r, _ in hits}:
            hits = sorted(hits + [(self_row, float(vector @ vector))], key=lambda h: -h[1])[:k]
    frame = _frame(store, loaded, hits)
    return SimilarResult(frame, name, resolved, notes)


# --------------------------------------------------------------------------- query
def _resolve_query(store: Store, loaded: LoadedIndex, query: str, *, add: bool) -> dict[str, Any]:
    """Turn a clip id, stored path or new file into ``{clip_id, uri, source, vector}``."""
    clip_id = None
    if query in loaded.row_of():
        clip_id = query
    else:
        rows = store.clips(where=f"clip_id = {sql_quote(query)}", columns=["clip_id", "uri"])
        if rows.height:
            clip_id = query
        else:
            candidate = Path(query).expanduser()
            uri = str(candidate.resolve())
            rows = store.clips(where=f"uri = {sql_quote(uri)}", columns=["clip_id"])
            if rows.height:
                clip_id = rows["clip_id"][0]
            elif candidate.is_file():
                return _new_file(store, loaded, candidate.resolve(), add=add)
            elif candidate.exists():
                raise InputError(f"{query} is a folder: pass one media file or a clip_id")
            else:
                raise InputError(
                    f"unknown clip {query!r}: not a clip_id in {store.uri} and not a file "
                    "(list clip ids with `emofs clips`)")
    vector = _stored_vector(store, loaded, clip_id)
    uri = store.clips(where=f"clip_id = {sql_quote(clip_id)}", columns=["uri"])
    return {"clip_id": clip_id, "uri": uri["uri"][0] if uri.height else None,
            "source": "store", "vector": vector}


def _stored_vector(store: Store, loaded: LoadedIndex, clip_id: str) -> np.ndarray:
    from .features import read_features

    manifest = loaded.manifest
    parts = []
    for enc in manifest["encoders"]:
        matrix = read_features(store, enc, clip_ids=[clip_id])
        if not len(matrix):
            raise InputError(
                f"clip {clip_id!r} has no {enc!r} features: run `emofs extract --encoders {enc} "
                f"--where \"clip_id = {sql_quote(clip_id)}\"` first")
        parts.append(_check_dim(matrix.vectors[:1], enc, manifest, loaded.name))
    return fuse_vectors(parts, manifest["weights"], manifest.get("standardize"))[0]  # (D,)


def _check_dim(vectors: np.ndarray, enc: str, manifest: dict[str, Any], name: str) -> np.ndarray:
    want = manifest["feature_sets"][enc]["dim"]
    if vectors.shape[-1] != want:
        raise DimensionMismatchError(
            f"{enc!r} query vector has dim {vectors.shape[-1]} but index {name!r} was built with "
            f"dim {want}: rebuild it with `{_build_command(manifest)} --rebuild`")
    return vectors


def _new_file(store: Store, loaded: LoadedIndex, path: Path, *, add: bool) -> dict[str, Any]:
    """Extract a media file that is not in the store with the store's specs."""
    try:
        from extractors import extract_file
    except ImportError as exc:
        raise InputError(
            f"{path} is not in the store and on-the-fly extraction is not available in "
            "this install: ingest and extract it (`emofs ingest FILE && emofs extract`) "
            "and query its clip_id") from exc
    manifest = loaded.manifest
    encoders = list(manifest["encoders"])
    out = extract_file(path, encoders, store, add=add)
    parts = []
    for enc in encoders:
        if enc not in out or out[enc] is None or out[enc].get("vector") is None:
            raise InputError(
                f"{path.name} gave no {enc!r} features (the encoder does not apply to its "
                f"modality, or decoding failed): query an index whose encoders fit this file")
        vec = np.asarray(out[enc]["vector"], dtype=np.float32).reshape(1, -1)  # (1, D_i)
        parts.append(_check_dim(vec, enc, manifest, loaded.name))
    clip_id = None
    if add:
        rows = store.clips(where=f"uri = {sql_quote(str(path))}", columns=["clip_id"])
        clip_id = rows["clip_id"][0] if rows.height else None
    return {"clip_id": clip_id, "uri": str(path), "source": "file",
            "vector": fuse_vectors(parts, manifest["weights"], manifest.get("standardize"))[0]}


# --------------------------------------------------------------------------- search
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
    """
    index = loaded.index
    query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)  # (1, D)
    n_pool = index.ntotal if allowed is None else len(allowed)
    n_excl = len(exclude) if allowed is None else len(set(allowed.tolist()) & set(exclude))
    target = min(k, n_pool - n_excl)
    if target <= 0:
        return []
    fetch = min(n_pool, target + len(exclude))
    if allowed is not None and len(allowed) * index.d <= _EXACT_SUBSET_MAX:
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
    while True:
        params = _search_params(kind, allowed, param, fetch)
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
    if loaded.kind == "ivf" and not loaded.direct_map:
        index.make_direct_map()  # IVF lists need a row -> (list, offset) map to reconstruct
        loaded.direct_map = True
    rows = np.asarray(rows, dtype=np.int64)
    if exclude:
        rows = rows[~np.isin(rows, np.fromiter(exclude, dtype=np.int64))]
    scores = np.empty(len(rows), dtype=np.float32)
    for start in range(0, len(rows), 8192):
        vectors = index.reconstruct_batch(rows[start : start + 8192])  # (B, D)
        scores[start : start + len(vectors)] = vectors @ query[0]  # (B,)
    take = min(target, len(rows))
    top = np.argpartition(-scores, take - 1)[:take] if take < len(rows) else np.arange(len(rows))
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(int(rows[i]), float(scores[i])) for i in top]


# --------------------------------------------------------------------------- output
def _frame(store: Store, loaded: LoadedIndex, hits: Sequence[tuple[int, float]]):
    import polars as pl

    ids = [loaded.clip_ids[r] for r, _ in hits]
    meta: dict[str, dict[str, Any]] = {}
    if ids:
        table = store.table(CLIPS, where=sql_in("clip_id", ids),
                            columns=["clip_id", "rel_path", "uri", "label"])
        if table is not None:
            meta = {r["clip_id"]: r for r in table.to_pylist()}
    rows = []
    for rank, (row, score) in enumerate(hits, start=1):
        cid = loaded.clip_ids[row]
        m = meta.get(cid, {})
        rows.append({"rank": rank, "clip_id": cid, "path": m.get("rel_path") or m.get("uri"),
                     "label": m.get("label"), "score": round(score, 6)})
    schema = {"rank": pl.Int64, "clip_id": pl.Utf8, "path": pl.Utf8, "label": pl.Utf8,
              "score": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


def neighbour_vote(frame, *, exclude: str | None = None) -> str | None:
    """``"7/10 neighbours: sad"``: the most common label among the neighbours.

    The query clip itself (``exclude``) does not vote. None when no neighbour has a label.
    """
    labels = [lab for cid, lab in zip(frame["clip_id"].to_list(), frame["label"].to_list())
              if cid != exclude]
    counts = Counter(lab for lab in labels if lab is not None)
    if not counts:
        return None
    (label, count), *rest = counts.most_common()
    tie = [lab for lab, c in rest if c == count]
    suffix = f" (tied with {', '.join(tie)})" if tie else ""
    return f"{count}/{len(labels)} neighbours: {label}{suffix}"
