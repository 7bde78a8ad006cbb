"""Nearest clips to a query: a clip id, a path in the store, or (with a callback) a file.

The query is resolved to a fused unit vector with the index's encoders, weights and
standardisation (for a ``--normalize`` index: the statistics of the query's group, from
its clip column or ``group=``; the indexed rows' statistics when the group has none),
then searched in the index (cosine, :func:`search_index`). featurestore
runs no encoders: a media file that is not in the store is turned into vectors by the
caller's ``file_vectors`` callback (``workflows.similar`` passes one built on
``extractors.extract_file``; the CLI's ``emofs similar FILE`` uses it).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import DimensionMismatchError, InputError
from ..features import read_features
from ..schema import CLIPS, features_name
from ..store import Store, sql_quote
from .ids import KeyColumn
from .catalog import (
    at_built_version,
    build_command,
    index_staleness,
    indexes_by_recency,
    latest_version,
    resolve_index_name,
)
from .load import LoadedIndex, load_index
from .search import search_index
from ..versioned import Snapshot, per_version
from .vectors import fuse_vectors, group_query_stats

log = logging.getLogger(__name__)

__all__ = ["FileVectors", "SimilarResult", "find_similar", "similar", "neighbour_vote",
           "RESULT_COLUMNS", "ClipMeta", "clip_meta"]

RESULT_COLUMNS = ["rank", "clip_id", "path", "label", "score"]

#: ``file_vectors(path, encoders, add) -> {encoder: (D_i,) vector or None}``: the vectors
#: of a media file that is not in the store, one per encoder (None or missing: the encoder
#: does not apply to the file). With ``add`` the file and its features are also stored.
FileVectors = Callable[[Path, list[str], bool], dict[str, "np.ndarray | None"]]


@dataclass
class SimilarResult:
    """Neighbours of one query.

    Attributes:
        rows: one dict per neighbour, best first, with ``rank, clip_id, path, label,
            score`` (plain Python values: printing them needs no DataFrame library).
        index: the index searched.
        query: how the query was resolved (``clip_id``, ``uri``, ``source``).
        notes: lines worth telling the user (which index was picked, staleness).
    """

    rows: list[dict[str, Any]]
    index: str
    query: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def frame(self) -> Any:
        """The rows as a polars DataFrame (``rank, clip_id, path, label, score``)."""
        import polars as pl

        schema = {"rank": pl.Int64, "clip_id": pl.Utf8, "path": pl.Utf8, "label": pl.Utf8,
                  "score": pl.Float64}
        return pl.DataFrame(self.rows, schema=schema)

    def vote(self) -> str | None:
        """The neighbour-vote line, e.g. ``"7/10 neighbours: sad"``."""
        return neighbour_vote(self.rows, exclude=self.query.get("clip_id"))


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
    file_vectors: FileVectors | None = None,
    group: str | None = None,
) -> SimilarResult:
    """Find the ``k`` clips most similar to ``query``.

    Args:
        query: a ``clip_id``, the path of a clip already in the store, or a media file
            that is not in the store (needs ``file_vectors``).
        k: number of neighbours.
        index: index name; default the store's only index, or the most recently built one
            holding a stored query clip (else the most recently built).
        where: SQL filter over clip columns (``"label = 'sad' AND split = 'train'"``).
        include_self: keep the query clip itself in the results.
        add: ask ``file_vectors`` to also store a new media file and its features.
        warn_stale: warn when the index is behind its feature sets.
        file_vectors: turns a media file that is not in the store into per-encoder
            ``(D_i,)`` vectors (see :data:`FileVectors`); without it such a query is an
            :class:`InputError`.
        group: for an index built with ``--normalize COLUMN``: the query's group (e.g.
            its speaker), whose statistics normalise it. Default: a stored clip's own
            ``COLUMN`` value; a new file without one uses the indexed rows' statistics.

    Returns:
        A :class:`SimilarResult` (``.frame`` has ``rank, clip_id, path, label, score``).

    Raises:
        IndexNotFoundError, IndexCorruptError, DimensionMismatchError, InputError.
    """
    if k < 1:
        raise InputError(f"-k must be >= 1 (got {k})")
    name, note = resolve_index_name(store, index)
    loaded = load_index(store, name)
    if index is None and note:  # several indexes, none named: the newest that holds a stored query
        name, note, loaded = _index_holding(store, str(query), name, note, loaded)
    notes = [note] if note else []
    manifest = loaded.manifest
    if warn_stale:
        stale = index_staleness(store, manifest)
        if stale:
            line = (f"index {name!r} is behind the store ({'; '.join(stale)}): run "
                    f"`{build_command(manifest)}` to update it")
            log.warning(line)
            notes.append(line)
    meta = clip_meta(store)  # Lance only when the clips changed since the last search
    resolved = _resolve_query(store, loaded, str(query), meta, add=add, file_vectors=file_vectors,
                              group=group)
    vector = resolved.pop("vector")  # (D,)
    group_note = resolved.pop("group_note", "")
    if group_note:
        notes.append(group_note)
    if vector.shape != (loaded.dim,):
        raise DimensionMismatchError(
            f"query vector has dim {vector.shape[-1]} but index {name!r} has dim {loaded.dim}: "
            f"rebuild the index with `{build_command(manifest)} --rebuild`")

    allowed = None
    if where:
        selected = store.clips(where=where, columns=["clip_id"])["clip_id"]  # a polars Series
        allowed = np.unique(loaded.row_of().rows(selected))  # sorted int64 rows
        if not len(allowed):
            log.warning(f"no clip in index {name!r} matches --where {where!r}")
    self_row = loaded.row_of().get(resolved.get("clip_id")) if resolved.get("clip_id") else None
    exclude = set() if include_self or self_row is None else {self_row}
    hits = search_index(loaded, vector, k, allowed=allowed, exclude=exclude)
    if include_self and self_row is not None and (allowed is None or self_row in set(allowed.tolist())):
        if self_row not in {r for r, _ in hits}:
            hits = sorted(hits + [(self_row, float(vector @ vector))], key=lambda h: -h[1])[:k]
    if resolved["source"] == "file" and add:
        meta = clip_meta(store)  # the new file is a clip now
    return SimilarResult(_rows(loaded, hits, meta), name, resolved, notes)


def _index_holding(store: Store, query: str, name: str, note: str, loaded: LoadedIndex):
    """The most recently built index holding stored clip ``query`` (a clip id or stored path),
    instead of the newest index when that one lacks it (an audio clip and a face-only index);
    returns ``(name, note, loaded)``; a new file keeps the newest."""
    meta = clip_meta(store)
    clip_id = query if query in meta else meta.clip_of_uri(str(Path(query).expanduser().resolve()))
    if clip_id is None or clip_id in loaded.row_of():
        return name, note, loaded
    for other in indexes_by_recency(store):
        if other == name:
            continue
        candidate = load_index(store, other)
        if clip_id in candidate.row_of():
            return other, (f"using index {other!r}, the most recently built of those holding "
                           f"{clip_id!r} (the newest, {name!r}, does not); pick one with --index"), candidate
    return name, note, loaded


# --------------------------------------------------------------------------- query
def _resolve_query(store: Store, loaded: LoadedIndex, query: str, meta: ClipMeta, *, add: bool,
                   file_vectors: FileVectors | None, group: str | None = None) -> dict[str, Any]:
    """Turn a clip id, stored path or new file into ``{clip_id, uri, source, vector}``."""
    clip_id = None
    if query in loaded.row_of() or query in meta:
        clip_id = query
    else:
        candidate = Path(query).expanduser()
        uri = str(candidate.resolve())
        if meta.clip_of_uri(uri) is not None:
            clip_id = meta.clip_of_uri(uri)
        elif candidate.is_file():
            return _file_query(store, loaded, candidate.resolve(), add=add,
                               file_vectors=file_vectors, group=group)
        elif candidate.exists():
            raise InputError(f"{query} is a folder: pass one media file or a clip_id")
        else:
            raise InputError(
                f"unknown clip {query!r}: not a clip_id in {store.uri} and not a file "
                "(list clip ids with `emofs clips`)")
    normalize = loaded.manifest.get("normalize")
    if group is None and normalize:
        column = normalize["column"]
        row = store.clips(where=f"clip_id = {sql_quote(clip_id)}")
        group = row[column][0] if row.height and column in row.columns else None
    stats, note = _query_stats(loaded, group)
    vector = _indexed_vector(store, loaded, clip_id)
    if vector is None:
        vector = _stored_vector(store, loaded, clip_id, stats)
    known = meta.get(clip_id)
    return {"clip_id": clip_id, "uri": known[2] if known else None,
            "source": "store", "vector": vector, "group": group, "group_note": note}


def _indexed_vector(store: Store, loaded: LoadedIndex, clip_id: str) -> np.ndarray | None:
    """The clip's ``(D,)`` vector read back from the index, when that is exactly what
    :func:`_stored_vector` would compute: the clip is indexed, the index is not
    group-normalised (a query's group statistics may differ from its row's), and every
    feature set is at the version the index was built from. None otherwise."""
    manifest = loaded.manifest
    row = loaded.row_of().get(clip_id)
    if row is None or manifest.get("normalize"):
        return None
    for enc, state in manifest.get("feature_sets", {}).items():
        if not at_built_version(store, enc, state):
            return None
    return loaded.reconstruct(row)  # (D,)


def _query_stats(loaded: LoadedIndex, group: Any) -> tuple[Any, str]:
    """Per-encoder statistics for a query of ``group``, and a note when it falls back."""
    manifest = loaded.manifest
    normalize = manifest.get("normalize")
    stats = group_query_stats(manifest.get("standardize"), normalize, group)
    note = ""
    if normalize and stats is manifest.get("standardize"):
        column = normalize["column"]
        note = (f"index {loaded.name!r} z-scores each {column}; the query's {column} "
                + (f"{group!r} has fewer than {normalize['min_clips']} indexed clips"
                   if group is not None else "is unknown (pass --group)")
                + ", so it uses the indexed rows' statistics")
        log.warning(note)
    return stats, note


def _stored_vector(store: Store, loaded: LoadedIndex, clip_id: str, stats) -> np.ndarray:
    manifest = loaded.manifest
    parts = []
    for enc in manifest["encoders"]:
        matrix = read_features(store, enc, clip_ids=[clip_id])
        if not len(matrix):
            holding = [n for n in indexes_by_recency(store) if n != loaded.name
                       and clip_id in load_index(store, n).row_of()]
            other = (f"search an index that holds it (--index {holding[0]}), or " if holding
                     else "if it has that modality, ")
            raise InputError(
                f"clip {clip_id!r} has no {enc!r} features, which index {loaded.name!r} needs: {other}"
                f"run `emofs extract --encoders {enc} --where \"clip_id = {sql_quote(clip_id)}\"`")
        if not np.isfinite(matrix.vectors[:1]).all():
            raise InputError(
                f"clip {clip_id!r}: its {enc!r} vector holds NaN or inf, so it has no neighbours: "
                f"run `emofs check --repair`, then `emofs extract --encoders {enc}` to redo it")
        parts.append(_check_dim(matrix.vectors[:1], enc, manifest, loaded.name))  # (1, D_i)
    return fuse_vectors(parts, manifest["weights"], stats)[0]  # (D,)


def _check_dim(vectors: np.ndarray, enc: str, manifest: dict[str, Any], name: str) -> np.ndarray:
    want = manifest["feature_sets"][enc]["dim"]
    if vectors.shape[-1] != want:
        raise DimensionMismatchError(
            f"{enc!r} query vector has dim {vectors.shape[-1]} but index {name!r} was built with "
            f"dim {want}: rebuild it with `{build_command(manifest)} --rebuild`")
    return vectors


def _file_query(store: Store, loaded: LoadedIndex, path: Path, *, add: bool,
                file_vectors: FileVectors | None, group: str | None = None) -> dict[str, Any]:
    """The fused vector of a media file that is not in the store, from ``file_vectors``."""
    if file_vectors is None:
        raise InputError(
            f"{path} is not in the store: ingest and extract it (`emofs ingest FILE && emofs "
            "extract`) and query its clip_id, or run `emofs similar FILE`, which extracts it "
            "on the fly")
    manifest = loaded.manifest
    encoders = list(manifest["encoders"])
    out = file_vectors(path, encoders, add)
    parts = []
    for enc in encoders:
        if out.get(enc) is None:
            raise InputError(
                f"{path.name} gave no {enc!r} features (the encoder does not apply to its "
                f"modality, or decoding failed): query an index whose encoders fit this file")
        vec = np.asarray(out[enc], dtype=np.float32).reshape(1, -1)  # (1, D_i)
        parts.append(_check_dim(vec, enc, manifest, loaded.name))
    clip_id = None
    if add:
        rows = store.clips(where=f"uri = {sql_quote(str(path))}", columns=["clip_id"])
        clip_id = rows["clip_id"][0] if rows.height else None
    stats, note = _query_stats(loaded, group)
    return {"clip_id": clip_id, "uri": str(path), "source": "file", "group": group,
            "group_note": note, "vector": fuse_vectors(parts, manifest["weights"], stats)[0]}


# --------------------------------------------------------------------------- output
def _rows(loaded: LoadedIndex, hits: Sequence[tuple[int, float]], meta: ClipMeta
          ) -> list[dict[str, Any]]:
    cids = loaded.clip_ids.take([row for row, _ in hits])
    rows = []
    for rank, (cid, (path, label, _), (_, score)) in enumerate(zip(cids, meta.many(cids), hits), start=1):
        rows.append({"rank": rank, "clip_id": cid, "path": path, "label": label,
                     "score": round(float(score), 6)})
    return rows


@dataclass
class ClipMeta:
    """The clip columns a search result shows, for one version of ``clips.lance``
    (:func:`clip_meta` keeps it per version), as Arrow columns: no Python object per clip.

    Attributes:
        ids: clip id per row (lookups by clip id).
        paths: rel_path, or the uri where there is none, per row.
        labels: label per row.
        uris: uri per row (lookups by uri: the first clip with that uri).
    """

    ids: KeyColumn
    paths: Any
    labels: Any
    uris: KeyColumn

    def get(self, clip_id: str) -> tuple[str | None, str | None, str | None] | None:
        """``(path, label, uri)`` of ``clip_id``, or None when it is not a clip."""
        row = self.ids.row(clip_id)
        if row is None:
            return None
        return self.paths[row].as_py(), self.labels[row].as_py(), self.uris[row]

    def many(self, clip_ids: Sequence[str]) -> list[tuple[str | None, str | None, str | None]]:
        """:meth:`get` of each of ``clip_ids`` (``(None, None, None)`` for one not a clip)."""
        import pyarrow as pa

        rows = self.ids.lookup(clip_ids)
        if len(rows) <= 64:  # a page of results: scalars, no Arrow kernel call
            paths, labels, uris = self.paths, self.labels, self.uris.to_arrow()
            return [(paths[r].as_py(), labels[r].as_py(), uris[r].as_py()) if r >= 0 else (None, None, None)
                    for r in rows.tolist()]
        take = pa.array(np.where(rows >= 0, rows, 0), mask=rows < 0)
        return list(zip(self.paths.take(take).to_pylist(), self.labels.take(take).to_pylist(),
                        self.uris.to_arrow().take(take).to_pylist()))

    def __contains__(self, clip_id: object) -> bool:
        return self.ids.row(clip_id) is not None

    def clip_of_uri(self, uri: str) -> str | None:
        """The first clip whose uri is ``uri``, or None."""
        row = self.uris.row(uri)
        return None if row is None else self.ids[row]

    def __len__(self) -> int:
        return len(self.ids)


def clip_meta(store: Store) -> ClipMeta:
    """The :class:`ClipMeta` of the store's current clips version, cached per process.

    A call reads the latest clips version (:func:`~featurestore.versioned.dataset_version`);
    the table itself is read only when the version changed since the last call (an
    ingest, a label correction), so a warm search looks its query and result rows up in
    memory.
    """
    path = store.path(CLIPS)
    version = latest_version(store, CLIPS)
    known = _LATEST.get(path)
    if known is not None and version is not None and known[0] == version:
        return known[1]  # the same clips version: no second look at the dataset
    meta = per_version(store, CLIPS, "clip_meta", _read_clip_meta, snapshot=_CLIP_META_FILE)
    _LATEST[path] = (version, meta)  # built at this version or a newer one: checked again next time
    return meta


#: clips dataset path -> (its version when last asked, the ClipMeta then).
_LATEST: dict[str, tuple[int | None, "ClipMeta"]] = {}


def _read_clip_meta(ds) -> ClipMeta:
    import pyarrow as pa
    import pyarrow.compute as pc

    if ds is None:
        return _meta_of({"clip_id": [], "path": [], "label": [], "uri": []})
    table = ds.to_table(columns=["clip_id", "rel_path", "uri", "label"])
    rel = table.column("rel_path")
    path = pc.coalesce(pc.if_else(pc.equal(rel, ""), pa.scalar(None, pa.string()), rel), table.column("uri"))
    return _meta_of({"clip_id": table.column("clip_id"), "path": path, "label": table.column("label"),
                     "uri": table.column("uri")})


def _meta_of(columns: dict[str, Any]) -> ClipMeta:
    import pyarrow as pa

    def arr(values):
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
        return values if isinstance(values, pa.Array) else pa.array(values, pa.string())

    label = arr(columns["label"])
    if len(label):
        label = label.dictionary_encode()  # a handful of labels: one byte or so per clip
    return ClipMeta(KeyColumn(arr(columns["clip_id"])), arr(columns["path"]), label,
                    KeyColumn(arr(columns["uri"])))


#: Stores with more clips keep no JSON snapshot: reading the columns from Lance is faster
#: than parsing it, and holds no Python object per clip.
SNAPSHOT_MAX_CLIPS = 200_000


def _dump_clip_meta(meta: ClipMeta) -> dict[str, Any]:
    if len(meta) > SNAPSHOT_MAX_CLIPS:
        return {"omitted": len(meta)}
    return {"clip_id": meta.ids.to_list(), "path": meta.paths.to_pylist(),
            "label": meta.labels.to_pylist(), "uri": meta.uris.to_list()}


def _load_clip_meta(saved: dict[str, Any]) -> ClipMeta:
    if "omitted" in saved:
        raise ValueError("no snapshot of a large store: read it from Lance")
    lengths = {len(saved[k]) for k in ("clip_id", "path", "label", "uri")}
    if len(lengths) != 1:
        raise ValueError("a damaged snapshot")
    return _meta_of(saved)


#: The clip meta of the newest clips version, kept in ``<store>/.emofs-cache/``: a new
#: ``emofs similar`` process on an unchanged store answers without opening Lance.
_CLIP_META_FILE = Snapshot("clip_meta.json", _dump_clip_meta, _load_clip_meta)


def neighbour_vote(frame, *, exclude: str | None = None) -> str | None:
    """``"7/10 neighbours: sad"``: the most common label among the neighbours.

    Args:
        frame: the neighbours: a DataFrame or a list of row dicts with ``clip_id, label``.
        exclude: the query clip itself, which does not vote.

    Returns:
        The line, or None when no neighbour has a label.
    """
    if isinstance(frame, list):
        pairs = [(r.get("clip_id"), r.get("label")) for r in frame]
    else:
        pairs = list(zip(frame["clip_id"].to_list(), frame["label"].to_list()))
    labels = [lab for cid, lab in pairs if cid != exclude]
    counts = Counter(lab for lab in labels if lab is not None)
    if not counts:
        return None
    (label, count), *rest = counts.most_common()
    tie = [lab for lab, c in rest if c == count]
    suffix = f" (tied with {', '.join(tie)})" if tie else ""
    return f"{count}/{len(labels)} neighbours: {label}{suffix}"
