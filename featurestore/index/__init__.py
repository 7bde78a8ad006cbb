"""FAISS indexes over feature sets: build, load, update, list, drop and search.

Layout inside the store::

    <store>/index/<name>.faiss        the serialised FAISS index (row i = id i)
    <store>/index/<name>.ids.parquet  row -> clip_id map (one string column, in id order)
    <store>/index/<name>.json         manifest: kind, params, encoders + weights, the
                                      feature-set fingerprints / versions it was built
                                      from, row count, store version, built_at, the
                                      sha256 of the two files above and of its own content

Similarity is cosine over (optionally standardised) L2-normalised vectors; a fused index
scores the weighted mean of the per-encoder cosines. Modules, by concern:

- :mod:`.files`: paths, byte I/O through the store's filesystem, manifest, load cache;
- :mod:`.vectors`: feature-set state, standardisation, fusion;
- :mod:`.kinds`: FAISS kinds (flat / ivf / hnsw / auto), adding, tuning, GPU copy;
- :mod:`.config`: :class:`IndexConfig` (also from CLI flags), :class:`IndexBuildReport`;
- :mod:`.build`: :func:`build_index` (full or incremental);
- :mod:`.catalog`: list / drop / pick an index, staleness, the build command text;
- :mod:`.load`: :class:`LoadedIndex`, :func:`load_index` (checksums, the manifest's own
  seal, kind / dim / rows against the FAISS object), :func:`~.load.verify_index`;
- :mod:`.drift`: does the index still match its feature sets (id map, sampled clips
  re-searched) — `emofs check` and `index build` ask;
- :mod:`.search`: filtered top-k search with widening and exact fallback;
- :mod:`.neighbours`: :func:`find_similar` for a clip id, stored path or (with a
  callback) a new media file, and the neighbour vote.

``faiss`` is imported lazily, inside the functions that need it.
"""

from __future__ import annotations

from ..errors import DimensionMismatchError, IndexCorruptError, IndexNotFoundError
from .build import FORMAT_VERSION, build_index
from .catalog import build_command, drop_index, index_names, index_staleness, list_indexes, resolve_index_name
from .config import IndexBuildReport, IndexConfig
from .files import read_manifest, shared_manifest
from .kinds import KINDS, add_vectors, auto_kind, new_index, to_gpu, train_index, tune_search
from .load import LoadedIndex, load_index
from .neighbours import (
    RESULT_COLUMNS,
    FileVectors,
    SimilarResult,
    find_similar,
    neighbour_vote,
    similar,
)
from .search import search_index
from .vectors import feature_stats, fuse_vectors, fused_matrix

__all__ = [
    "KINDS",
    "FORMAT_VERSION",
    "IndexConfig",
    "IndexBuildReport",
    "LoadedIndex",
    "IndexNotFoundError",
    "IndexCorruptError",
    "DimensionMismatchError",
    "build_index",
    "load_index",
    "list_indexes",
    "drop_index",
    "index_names",
    "read_manifest",
    "shared_manifest",
    "resolve_index_name",
    "index_staleness",
    "build_command",
    "fused_matrix",
    "fuse_vectors",
    "feature_stats",
    "auto_kind",
    "new_index",
    "train_index",
    "add_vectors",
    "tune_search",
    "to_gpu",
    "search_index",
    "FileVectors",
    "SimilarResult",
    "find_similar",
    "similar",
    "neighbour_vote",
    "RESULT_COLUMNS",
]
