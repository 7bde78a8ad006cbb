"""FAISS indexes over feature sets: build, load, update, list and drop.

Layout inside the store::

    <store>/index/<name>.faiss        the serialised FAISS index (row i = id i)
    <store>/index/<name>.ids.parquet  row -> clip_id map (one string column, in id order)
    <store>/index/<name>.json         manifest: kind, params, encoders + weights, the
                                      feature-set fingerprints / versions it was built
                                      from, row count, store version, built_at

Similarity is cosine: every encoder's vector is L2-normalised; a fused index concatenates
the normalised vectors scaled by ``sqrt(w_i / sum(w))`` so the inner product of two fused
vectors is the weighted mean of the per-encoder cosines (a score in ``[-1, 1]``).

Kinds: ``flat`` (exact ``IndexFlatIP``), ``ivf`` (``IndexIVFFlat``, ``nlist ~ 4 sqrt(N)``,
``nprobe`` tuned to a recall target), ``hnsw`` (``IndexHNSWFlat`` inner product,
``efSearch`` tuned), and ``auto`` which picks by size. Files are written through
``pyarrow.fs`` so a store on an object-store URI works too.
"""

from __future__ import annotations

import logging
import io
import json
import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np

from .progress import track_progress
from .errors import InputError, StoreError
from .schema import CLIPS, FEATURES_DIR, INDEX_DIR
from .store import Store, sql_quote

log = logging.getLogger(__name__)

__all__ = [
    "KINDS",
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
    "read_manifest",
    "resolve_index_name",
    "index_staleness",
    "fused_matrix",
    "fuse_vectors",
    "auto_kind",
]

KINDS = ("auto", "flat", "ivf", "hnsw")
FORMAT_VERSION = 1
#: ``auto`` uses exact search up to this many rows and IVF past it. IVF beat HNSW in
#: bench/bench_index.py at both 100k (0.12 vs 0.31 ms p50, recall 0.999 vs 0.984) and 1M
#: rows (0.46 ms, recall 1.0 vs 7.0 ms, recall 0.92 at efSearch 1024) on 2 cores.
_AUTO_FLAT_MAX = 20_000
_ADD_BATCH = 20_000
_TUNE_QUERIES = 200
_TUNE_MARGIN = 0.02
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class IndexNotFoundError(StoreError):
    """The store has no index of that name (the message names the build command)."""


class IndexCorruptError(StoreError):
    """An index file exists but cannot be read back."""


class DimensionMismatchError(InputError):
    """A query vector's dimension differs from the index's."""


# --------------------------------------------------------------------------- config
@dataclass
class IndexConfig:
    """What to build.

    Attributes:
        encoders: feature-set names; two or more build a fused index.
        weights: one weight per encoder (default all 1); the fused score is the
            weighted mean of the per-encoder cosines.
        kind: ``auto``, ``flat``, ``ivf`` or ``hnsw``.
        name: index name (default: the encoder name, or ``a+b`` for a fused index).
        recall: recall@10 target the ANN search parameters are tuned to.
        nlist: IVF lists (default ``4 * sqrt(N)``, capped so each list trains on >= 39 rows).
        hnsw_m: HNSW graph degree.
        ef_construction: HNSW build-time beam width.
        rebuild: rebuild from scratch even when an incremental add is possible.
        standardize: z-score every dimension with the indexed rows' mean and std before
            the cosine (the stats are kept in the manifest and applied to queries), so
            dimensions with large raw ranges (eGeMAPS' Hz and dB functionals) do not
            dominate and scores spread over [-1, 1].
    """

    encoders: list[str]
    weights: list[float] | None = None
    kind: str = "auto"
    name: str | None = None
    recall: float = 0.95
    nlist: int | None = None
    hnsw_m: int = 32
    ef_construction: int = 40
    rebuild: bool = False
    standardize: bool = True

    def __post_init__(self) -> None:
        self.encoders = [e.strip() for e in self.encoders if e and e.strip()]
        if not self.encoders:
            raise InputError("pass --encoder NAME or --fused A,B (feature sets to index)")
        if len(set(self.encoders)) != len(self.encoders):
            raise InputError(f"--fused lists an encoder twice: {','.join(self.encoders)}")
        if self.weights is None:
            self.weights = [1.0] * len(self.encoders)
        self.weights = [float(w) for w in self.weights]
        if len(self.weights) != len(self.encoders):
            raise InputError(
                f"--weights needs one value per encoder ({len(self.encoders)}: "
                f"{','.join(self.encoders)}), got {len(self.weights)}"
            )
        if any(not math.isfinite(w) or w <= 0 for w in self.weights):
            raise InputError(f"--weights must be positive numbers (got {self.weights})")
        if self.kind not in KINDS:
            raise InputError(f"--kind must be one of {', '.join(KINDS)} (got {self.kind!r})")
        if self.name is None:
            self.name = "+".join(self.encoders)
        _check_name(self.name)
        if not 0.0 < self.recall <= 1.0:
            raise InputError(f"--recall must be in (0, 1] (got {self.recall})")
        if self.nlist is not None and self.nlist < 1:
            raise InputError(f"--nlist must be >= 1 (got {self.nlist})")
        if self.hnsw_m < 4 or self.ef_construction < 8:
            raise InputError("--hnsw-m must be >= 4 and --ef-construction >= 8")


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name or ""):
        raise InputError(
            f"invalid index name {name!r}: use letters, digits, '.', '_', '-', '+' "
            "(no '/' or leading dot)"
        )


@dataclass
class IndexBuildReport:
    """What one ``index build`` did."""

    name: str
    kind: str
    mode: str  # created | rebuilt | added | unchanged
    rows: int
    added: int
    dim: int
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    skipped: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {
            "name": self.name, "kind": self.kind, "mode": self.mode, "rows": self.rows,
            "added": self.added, "dim": self.dim, "seconds": round(self.seconds, 3),
            "params": self.params, "reason": self.reason, "skipped": self.skipped,
        }


# --------------------------------------------------------------------------- paths / io
def _paths(name: str) -> dict[str, str]:
    return {
        "faiss": f"{INDEX_DIR}/{name}.faiss",
        "ids": f"{INDEX_DIR}/{name}.ids.parquet",
        "manifest": f"{INDEX_DIR}/{name}.json",
    }


def _fs(store: Store, rel: str):
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(store.path(rel))


def _write_bytes(store: Store, rel: str, data: bytes) -> None:
    fs, path = _fs(store, rel)
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    tmp = f"{path}.tmp"
    with fs.open_output_stream(tmp) as handle:
        handle.write(data)
    fs.move(tmp, path)


def _read_bytes(store: Store, rel: str) -> bytes | None:
    fs, path = _fs(store, rel)
    try:
        with fs.open_input_stream(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        if "not found" in str(exc).lower() or "no such file" in str(exc).lower():
            return None
        raise


def _delete(store: Store, rel: str) -> bool:
    import pyarrow.fs as pafs

    fs, path = _fs(store, rel)
    if fs.get_file_info(path).type == pafs.FileType.File:
        fs.delete_file(path)
        return True
    return False


def read_manifest(store: Store, name: str) -> dict[str, Any] | None:
    """The manifest of index ``name`` (None when it has none)."""
    raw = _read_bytes(store, _paths(name)["manifest"])
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise IndexCorruptError(
            f"index manifest {store.path(_paths(name)['manifest'])} is not valid JSON: "
            f"rebuild it with `emofs index build ... --name {name} --rebuild`"
        ) from exc


# --------------------------------------------------------------------------- vectors
def _l2_normalise(x: np.ndarray) -> np.ndarray:
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
        _l2_normalise(np.asarray(p, dtype=np.float32)) * np.float32(math.sqrt(w / total))
        for p, w in zip(parts, weights)
    ]
    fused = scaled[0] if len(scaled) == 1 else np.concatenate(scaled, axis=1)  # (N, sum D)
    return np.ascontiguousarray(fused, dtype=np.float32)


def _feature_state(store: Store, encoder: str) -> dict[str, Any]:
    from .inventory import feature_set_info

    ds = store.dataset(f"{FEATURES_DIR}/{encoder}.lance")
    if ds is None:
        available = ", ".join(store.feature_sets()) or "none"
        raise StoreError(
            f"no feature set {encoder!r} in {store.uri} (available: {available}): "
            f"run `emofs extract --encoders {encoder}` first"
        )
    fs_info = feature_set_info(store, encoder)
    return {"fingerprint": fs_info["fingerprint"], "version": fs_info["version"],
            "dim": fs_info["dim"], "rows": fs_info["rows"]}


def _current_ids(store: Store, encoder: str, fingerprint: str | None) -> list[str]:
    where = f"fingerprint = {sql_quote(fingerprint)}" if fingerprint else None
    table = store.table(f"{FEATURES_DIR}/{encoder}.lance", columns=["clip_id"], where=where)
    return [] if table is None else table.column("clip_id").to_pylist()


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
    from .features import read_features

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


# --------------------------------------------------------------------------- build
def auto_kind(n: int) -> str:
    """The kind ``auto`` picks for ``n`` rows: exact when small, else IVF."""
    return "flat" if n <= _AUTO_FLAT_MAX else "ivf"


def _default_nlist(n: int) -> int:
    return max(1, min(int(round(4 * math.sqrt(n))), n // 39))


def _new_index(kind: str, dim: int, n: int, config: IndexConfig, params: dict[str, Any]):
    import faiss

    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.ef_construction
        params.update(M=config.hnsw_m, efConstruction=config.ef_construction)
        return index
    nlist = config.nlist or _default_nlist(n)
    if nlist > n:
        raise InputError(f"--nlist {nlist} is larger than the {n} rows to index: lower it")
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.max_points_per_centroid = 64  # train k-means on <= 64 rows per list
    index.cp.niter = 15
    params.update(nlist=nlist)
    return index


def _add(index, vectors: np.ndarray, description: str, progress: bool) -> None:
    n = vectors.shape[0]
    with track_progress(n, description, enabled=progress, unit="rows") as advance:
        for start in range(0, n, _ADD_BATCH):
            chunk = vectors[start : start + _ADD_BATCH]  # (B, D)
            index.add(chunk)
            advance(chunk.shape[0])


def _search_param_name(kind: str) -> str | None:
    return {"ivf": "nprobe", "hnsw": "efSearch"}.get(kind)


def _set_search_param(index, kind: str, value: int) -> None:
    if kind == "ivf":
        index.nprobe = int(value)
    elif kind == "hnsw":
        index.hnsw.efSearch = int(value)


def _tune(index, kind: str, vectors: np.ndarray, target: float, params: dict[str, Any]) -> None:
    """Pick the smallest nprobe / efSearch whose recall@10 (self excluded) meets ``target``.

    The sample queries are rows of the index (their own row excluded); unseen queries
    score slightly lower, so the sample must clear ``target + _TUNE_MARGIN``.
    """
    import faiss

    name = _search_param_name(kind)
    if name is None:
        return
    n = vectors.shape[0]
    k = min(10, n - 1)
    if k < 1:
        _set_search_param(index, kind, 16)
        params[name] = 16
        return
    rng = np.random.default_rng(0)
    rows = rng.choice(n, size=min(_TUNE_QUERIES, n), replace=False)
    queries = vectors[rows]  # (Q, D)
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, truth = exact.search(queries, k + 1)  # (Q, k+1)
    truth_sets = [set(t[t != r][:k]) for t, r in zip(truth, rows)]
    if kind == "ivf":
        candidates = [c for c in (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512,
                                  1024, 2048, 4096) if c < index.nlist] + [index.nlist]
    else:
        candidates = [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024]
    chosen, recall = candidates[-1], 0.0
    for value in candidates:
        _set_search_param(index, kind, value)
        _, found = index.search(queries, k + 1)
        hits = sum(len(truth_sets[i] & set(f[f != r][:k])) for i, (f, r) in enumerate(zip(found, rows)))
        recall = hits / max(1, sum(len(t) for t in truth_sets))
        chosen = value
        if recall >= min(1.0, target + _TUNE_MARGIN):
            break
    _set_search_param(index, kind, chosen)
    params[name] = int(chosen)
    params["tuned_recall_at_10"] = round(float(recall), 4)


def _manifest(config: IndexConfig, kind: str, params: dict[str, Any], states: dict[str, Any],
              ids: list[str], dim: int, store: Store, built_at: str | None,
              stats: list[dict[str, list[float]]] | None) -> dict[str, Any]:
    import faiss

    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {
        "format": FORMAT_VERSION,
        "name": config.name,
        "kind": kind,
        "metric": "cosine",
        "params": params,
        "encoders": list(config.encoders),
        "weights": list(config.weights),
        "fused": len(config.encoders) > 1,
        "feature_sets": {e: {"fingerprint": s["fingerprint"], "version": s["version"],
                             "dim": s["dim"]} for e, s in states.items()},
        "dim": dim,
        "rows": len(ids),
        "store_version": store.version(CLIPS),
        "built_at": built_at or now,
        "updated_at": now,
        "faiss_version": faiss.__version__,
        "files": {k: v.split("/", 1)[1] for k, v in _paths(config.name).items()},
        # Per-encoder z-score applied to indexed rows and queries (None: plain cosine).
        "standardize": stats,
    }


def _save(store: Store, name: str, index, ids: list[str], manifest: dict[str, Any]) -> None:
    import faiss
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = _paths(name)
    _write_bytes(store, paths["faiss"], faiss.serialize_index(index).tobytes())
    sink = io.BytesIO()
    pq.write_table(pa.table({"clip_id": pa.array(ids, pa.string())}), sink)
    _write_bytes(store, paths["ids"], sink.getvalue())
    _write_bytes(store, paths["manifest"], json.dumps(manifest, indent=2).encode())
    _CACHE.pop((store.uri, name), None)


def build_index(store: Store, config: IndexConfig, *, progress: bool = True) -> IndexBuildReport:
    """Build index ``config.name``, or bring an existing one up to date.

    An existing index with the same encoders, weights, kind and feature-set fingerprints
    only gets the rows extracted since it was built (``flat``, ``ivf`` and ``hnsw`` all
    support adding). A changed fingerprint, weights, kind, or clips removed from a feature
    set trigger a full rebuild, and the report says why.

    Raises:
        StoreError: a feature set is missing (names the extract command).
        InputError: bad config, or no clip has all the encoders' features.
    """
    start = time.perf_counter()
    states = {enc: _feature_state(store, enc) for enc in config.encoders}
    dims = {enc: s["dim"] for enc, s in states.items()}
    fingerprints = {enc: s["fingerprint"] for enc, s in states.items()}
    skipped = _stale_rows(store, states)

    existing = None
    reason = ""
    if not config.rebuild and read_manifest(store, config.name) is not None:
        existing, reason = _incremental_candidate(store, config, states)

    if existing is not None:
        loaded = existing
        current = set(_common_ids(store, config.encoders, fingerprints))
        indexed = set(loaded.clip_ids)
        removed = indexed - current
        if removed:
            reason = f"{len(removed)} indexed clips no longer have current features"
        else:
            new_ids = sorted(current - indexed)
            params = dict(loaded.manifest["params"])
            if new_ids:
                got_ids, vectors, _ = fused_matrix(
                    store, config.encoders, config.weights, clip_ids=new_ids,
                    fingerprints=fingerprints, stats=loaded.manifest.get("standardize"))
                _add(loaded.index, vectors, f"index {config.name}: adding", progress)
            else:
                got_ids = []
            ids = loaded.clip_ids + got_ids
            manifest = _manifest(config, loaded.kind, params, states, ids, loaded.dim, store,
                                 loaded.manifest.get("built_at"), loaded.manifest.get("standardize"))
            if got_ids or manifest["feature_sets"] != loaded.manifest.get("feature_sets"):
                _save(store, config.name, loaded.index, ids, manifest)
            return IndexBuildReport(
                config.name, loaded.kind, "added" if got_ids else "unchanged", len(ids),
                len(got_ids), loaded.dim, time.perf_counter() - start, params, "", skipped)

    ids, vectors, stats = fused_matrix(store, config.encoders, config.weights,
                                       fingerprints=fingerprints,
                                       stats="compute" if config.standardize else None)
    if not ids:
        raise InputError(
            f"no clip has current features for all of {', '.join(config.encoders)}: run "
            f"`emofs extract --encoders {','.join(config.encoders)}` first"
        )
    dim = int(sum(dims.values()))
    assert vectors.shape == (len(ids), dim), (vectors.shape, len(ids), dim)
    kind = auto_kind(len(ids)) if config.kind == "auto" else config.kind
    params: dict[str, Any] = {"requested_kind": config.kind, "recall_target": config.recall}
    index = _new_index(kind, dim, len(ids), config, params)
    if kind == "ivf":
        train = vectors
        cap = 64 * index.nlist
        if len(ids) > cap:
            train = vectors[np.random.default_rng(0).choice(len(ids), cap, replace=False)]
        log.info(f"index {config.name}: training IVF ({index.nlist} lists) on {len(train)} rows")
        index.train(train)
    _add(index, vectors, f"index {config.name}: {kind}", progress)
    _tune(index, kind, vectors, config.recall, params)
    manifest = _manifest(config, kind, params, states, ids, dim, store, None, stats)
    _save(store, config.name, index, ids, manifest)
    mode = "rebuilt" if reason else "created"
    return IndexBuildReport(config.name, kind, mode, len(ids), len(ids), dim,
                            time.perf_counter() - start, params, reason, skipped)


def _stale_rows(store: Store, states: dict[str, Any]) -> dict[str, int]:
    """Rows per encoder still written with an older spec (left out of the index)."""
    skipped = {}
    for enc, state in states.items():
        if not state["fingerprint"]:
            continue
        current = len(_current_ids(store, enc, state["fingerprint"]))
        if current < state["rows"]:
            skipped[enc] = state["rows"] - current
            log.warning(f"{state['rows'] - current} rows of {enc!r} have an older spec and are left "
                 f"out of the index: run `emofs extract --encoders {enc}` to refresh them")
    return skipped


def _common_ids(store: Store, encoders: Sequence[str], fingerprints: dict[str, Any]) -> list[str]:
    common: set[str] | None = None
    for enc in encoders:
        ids = set(_current_ids(store, enc, fingerprints.get(enc)))
        common = ids if common is None else common & ids
    return sorted(common or ())


def _incremental_candidate(store: Store, config: IndexConfig, states: dict[str, Any]):
    """The existing index if rows can be added to it, else ``(None, why it is rebuilt)``."""
    manifest = read_manifest(store, config.name)
    if manifest.get("encoders") != list(config.encoders):
        return None, f"encoders changed ({','.join(manifest.get('encoders', []))} -> " \
                     f"{','.join(config.encoders)})"
    if [float(w) for w in manifest.get("weights", [])] != list(config.weights):
        return None, "weights changed"
    if config.kind != "auto" and config.kind != manifest.get("kind"):
        return None, f"kind changed ({manifest.get('kind')} -> {config.kind})"
    if manifest.get("format") != FORMAT_VERSION:
        return None, "index format changed"
    if (manifest.get("standardize") is not None) != config.standardize:
        return None, "standardisation " + ("switched on" if config.standardize else "switched off")
    for enc, state in states.items():
        before = manifest.get("feature_sets", {}).get(enc, {})
        if before.get("fingerprint") != state["fingerprint"] or before.get("dim") != state["dim"]:
            return None, f"the spec of {enc!r} changed (fingerprint " \
                         f"{before.get('fingerprint')} -> {state['fingerprint']})"
    try:
        loaded = load_index(store, config.name, use_cache=False)
    except IndexCorruptError as exc:
        return None, f"the old index could not be read ({exc})"
    return loaded, ""


# --------------------------------------------------------------------------- load
@dataclass
class LoadedIndex:
    """An index read back from the store.

    Attributes:
        name: index name.
        index: the CPU FAISS index (search parameters already set).
        clip_ids: row -> clip id.
        manifest: the manifest dict.
        gpu_index: the same index on the GPU(s) when faiss sees one, else None.
    """

    name: str
    index: Any
    clip_ids: list[str]
    manifest: dict[str, Any]
    gpu_index: Any = None
    direct_map: bool = False
    _row_of: dict[str, int] | None = None

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def row_of(self) -> dict[str, int]:
        """clip id -> row (built on first use)."""
        if self._row_of is None:
            self._row_of = {c: i for i, c in enumerate(self.clip_ids)}
        return self._row_of


_CACHE: dict[tuple[str, str], tuple[str, LoadedIndex]] = {}


def load_index(store: Store, name: str, *, use_cache: bool = True) -> LoadedIndex:
    """Read index ``name`` (cached per process until its manifest changes).

    Raises:
        IndexNotFoundError: no such index (names ``emofs index build``).
        IndexCorruptError: a file is unreadable or the files disagree.
    """
    import faiss
    import pyarrow.parquet as pq

    _check_name(name)
    manifest = read_manifest(store, name)
    paths = _paths(name)
    if manifest is None:
        if _read_bytes(store, paths["faiss"]) is not None:
            raise IndexCorruptError(
                f"index {name!r} has no manifest ({store.path(paths['manifest'])}): rebuild it "
                f"with `emofs index build --encoder ENCODER --name {name} --rebuild`"
            )
        available = ", ".join(store.index_names()) or "none"
        raise IndexNotFoundError(
            f"no index {name!r} in {store.uri} (available: {available}): build one with "
            f"`emofs index build --encoder {name.split('+')[0]}`"
        )
    stamp = f"{manifest.get('updated_at')}|{manifest.get('rows')}|{_file_stamp(store, paths['faiss'])}"
    cached = _CACHE.get((store.uri, name)) if use_cache else None
    if cached is not None and cached[0] == stamp:
        return cached[1]
    rebuild_hint = _build_command(manifest) + " --rebuild"
    raw = _read_bytes(store, paths["faiss"])
    if raw is None:
        raise IndexCorruptError(
            f"index file {store.path(paths['faiss'])} is missing: rebuild with `{rebuild_hint}`")
    try:
        index = faiss.deserialize_index(np.frombuffer(raw, dtype=np.uint8))
    except RuntimeError as exc:
        raise IndexCorruptError(
            f"index file {store.path(paths['faiss'])} is corrupt ({str(exc).splitlines()[0][:80]}): "
            f"rebuild with `{rebuild_hint}`") from exc
    raw_ids = _read_bytes(store, paths["ids"])
    try:
        ids = pq.read_table(io.BytesIO(raw_ids)).column("clip_id").to_pylist()
    except Exception as exc:  # noqa: BLE001 - any parquet failure means a bad file
        raise IndexCorruptError(
            f"index id map {store.path(paths['ids'])} is missing or unreadable: rebuild with "
            f"`{rebuild_hint}`") from exc
    if index.ntotal != len(ids) or index.ntotal != manifest.get("rows") or index.d != manifest.get("dim"):
        raise IndexCorruptError(
            f"index {name!r} files disagree ({index.ntotal} vectors of dim {index.d}, {len(ids)} ids, "
            f"manifest {manifest.get('rows')} rows of dim {manifest.get('dim')}): rebuild with "
            f"`{rebuild_hint}`")
    kind = manifest.get("kind")
    param = _search_param_name(kind)
    if param and param in manifest.get("params", {}):
        _set_search_param(index, kind, manifest["params"][param])
    loaded = LoadedIndex(name, index, ids, manifest, _to_gpu(index, kind))
    if use_cache:
        _CACHE[(store.uri, name)] = (stamp, loaded)
    return loaded


def _file_stamp(store: Store, rel: str) -> str:
    fs, path = _fs(store, rel)
    file_info = fs.get_file_info(path)
    return f"{file_info.size}|{file_info.mtime_ns}"


def _to_gpu(index, kind: str):
    """A GPU copy of ``index`` when faiss sees a GPU (flat and ivf), else None."""
    import faiss

    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    if get_num_gpus is None or get_num_gpus() < 1 or kind == "hnsw":
        return None
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except (RuntimeError, AttributeError) as exc:  # unsupported kind / build
        log.warning(f"could not move the index to the GPU ({str(exc).splitlines()[0]}): searching on CPU")
        return None


def _build_command(manifest: dict[str, Any]) -> str:
    encoders = manifest.get("encoders") or ["ENCODER"]
    name = manifest.get("name", "")
    if len(encoders) == 1:
        cmd = f"emofs index build --encoder {encoders[0]}"
    else:
        weights = ",".join(f"{w:g}" for w in manifest.get("weights", []))
        cmd = f"emofs index build --fused {','.join(encoders)} --weights {weights}"
    if name and name != "+".join(encoders):
        cmd += f" --name {name}"
    return cmd


# --------------------------------------------------------------------------- inventory
def list_indexes(store: Store) -> list[dict[str, Any]]:
    """One summary row per index: name, kind, encoders, rows, dim, built/updated, stale."""
    rows = []
    for name in store.index_names():
        try:
            manifest = read_manifest(store, name) or {}
        except IndexCorruptError:
            manifest = {}
        stale = index_staleness(store, manifest) if manifest else ["no manifest"]
        rows.append({
            "name": name,
            "kind": manifest.get("kind"),
            "encoders": ",".join(manifest.get("encoders", [])),
            "weights": ",".join(f"{w:g}" for w in manifest.get("weights", [])),
            "rows": manifest.get("rows"),
            "dim": manifest.get("dim"),
            "params": json.dumps(manifest.get("params", {}), sort_keys=True),
            "built_at": manifest.get("built_at"),
            "updated_at": manifest.get("updated_at"),
            "status": "; ".join(stale) if stale else "up to date",
        })
    return rows


def drop_index(store: Store, name: str) -> list[str]:
    """Delete index ``name``'s files; returns the paths removed.

    Raises:
        IndexNotFoundError: no such index.
    """
    _check_name(name)
    removed = [store.path(rel) for rel in _paths(name).values() if _delete(store, rel)]
    if not removed:
        available = ", ".join(store.index_names()) or "none"
        raise IndexNotFoundError(f"no index {name!r} in {store.uri} (available: {available}): "
                                 "see `emofs index list`")
    _CACHE.pop((store.uri, name), None)
    return removed


def resolve_index_name(store: Store, name: str | None) -> tuple[str, str | None]:
    """The index to query: ``name``, the only one, or the most recently built.

    Returns:
        ``(name, note)`` where ``note`` says how it was chosen (None when given).
    """
    if name:
        return name, None
    names = store.index_names()
    if not names:
        raise IndexNotFoundError(
            f"no index in {store.uri}: build one with `emofs index build --encoder NAME` "
            f"(feature sets: {', '.join(store.feature_sets()) or 'none yet'})"
        )
    if len(names) == 1:
        return names[0], None
    stamps = []
    for n in names:
        try:
            manifest = read_manifest(store, n) or {}
        except IndexCorruptError:
            manifest = {}
        stamps.append((manifest.get("updated_at") or manifest.get("built_at") or "", n))
    chosen = max(stamps)[1]
    return chosen, f"using index {chosen!r}, the most recently built of {len(names)} " \
                   f"({', '.join(names)}); pick one with --index"


def index_staleness(store: Store, manifest: dict[str, Any]) -> list[str]:
    """Why an index is behind its feature sets (empty list when it is current).

    Cheap when nothing changed (compares dataset versions); otherwise counts the clips
    extracted since the build.
    """
    reasons = []
    changed = []
    for enc, before in manifest.get("feature_sets", {}).items():
        try:
            state = _feature_state(store, enc)
        except StoreError:
            reasons.append(f"feature set {enc!r} is gone")
            continue
        if state["fingerprint"] != before.get("fingerprint"):
            reasons.append(f"the spec of {enc!r} changed since the build (full rebuild needed)")
        elif state["version"] != before.get("version"):
            changed.append(enc)
    if changed and not reasons:
        fingerprints = {e: s.get("fingerprint") for e, s in manifest["feature_sets"].items()}
        current = set(_common_ids(store, manifest["encoders"], fingerprints))
        ids_raw = _read_bytes(store, _paths(manifest["name"])["ids"])
        if ids_raw is not None:
            import pyarrow.parquet as pq

            indexed = set(pq.read_table(io.BytesIO(ids_raw)).column("clip_id").to_pylist())
            new = len(current - indexed)
            gone = len(indexed - current)
            if new:
                reasons.append(f"{new} clips extracted since the build are not in it")
            if gone:
                reasons.append(f"{gone} indexed clips no longer have current features")
    return reasons
