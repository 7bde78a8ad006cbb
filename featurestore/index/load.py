"""Reading an index back: :class:`LoadedIndex` and :func:`load_index` (cached per process).

A local store's index file is read by FAISS from the path, its checksum computed reading
the file in chunks (never the whole file as Python bytes next to the index: the old peak
was twice the index); flat and HNSW codes are memory-mapped (``IO_FLAG_MMAP_IFC``: in the
page cache, shared and reclaimable), IVF lists too with ``$EMOFS_INDEX_MMAP=1``
(``IO_FLAG_MMAP``; measured 2.1x slower to search, see :func:`_mapped_index`). The id map is one Arrow column
(:class:`~.ids.KeyColumn`), not a Python string per clip.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import IndexCorruptError, IndexNotFoundError, StoreError
from ..store import Store
from .catalog import build_command
from .files import (
    cache_index,
    cached_index,
    check_index_name,
    checksum_problem,
    file_stamp,
    index_paths,
    manifest_problem,
    read_bytes,
    read_manifest,
    shared_manifest,
)
from .ids import KeyColumn, RowOf
from .kinds import search_param_name, set_search_param, to_gpu

__all__ = ["LoadedIndex", "load_index", "verify_index", "kind_mismatch", "MMAP_IVF_ENV"]

#: Set to 1 to memory-map IVF inverted lists too (shared, reclaimable pages; slower search).
MMAP_IVF_ENV = "EMOFS_INDEX_MMAP"


@dataclass
class LoadedIndex:
    """An index read back from the store.

    Attributes:
        name: index name.
        index: the CPU FAISS index (search parameters already set).
        clip_ids: row -> clip id (a :class:`~.ids.KeyColumn`: a read-only list backed by
            one Arrow column, with lookups by clip id).
        manifest: the manifest dict.
        gpu_index: the same index on the GPU(s) when faiss sees one, else None.
        direct_map: whether an IVF index already has its row -> (list, offset) map.
        mapped: whether the vectors are memory-mapped from the index file (read-only).
    """

    name: str
    index: Any
    clip_ids: KeyColumn
    manifest: dict[str, Any]
    gpu_index: Any = None
    direct_map: bool = False
    mapped: bool = False
    _row_of: RowOf | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def kind(self) -> str:
        """``flat``, ``ivf`` or ``hnsw``."""
        return self.manifest["kind"]

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self.index.d)

    def __post_init__(self) -> None:
        if not isinstance(self.clip_ids, KeyColumn):
            self.clip_ids = KeyColumn(self.clip_ids)

    def row_of(self) -> RowOf:
        """clip id -> row (a read-only mapping over the id column; ``.rows(ids)`` maps many)."""
        if self._row_of is None:
            self._row_of = RowOf(self.clip_ids)
        return self._row_of

    def ensure_direct_map(self) -> None:
        """Give an IVF index its row -> (list, offset) map (needed to reconstruct rows),
        once, under a lock: concurrent searches may ask at the same time."""
        if self.kind == "ivf" and not self.direct_map:
            with self._lock:
                if not self.direct_map:
                    self.index.make_direct_map()
                    self.direct_map = True

    def reconstruct(self, row: int) -> np.ndarray:
        """The ``(D,)`` vector stored at ``row`` (exact: flat, IVF-flat and HNSW-flat keep
        the vectors)."""
        self.ensure_direct_map()
        return np.asarray(self.index.reconstruct(int(row)), dtype=np.float32)  # (D,)


def load_index(store: Store, name: str, *, use_cache: bool = True, mmap: bool | None = None) -> LoadedIndex:
    """Read index ``name`` (cached per process until its manifest changes).

    ``mmap`` (default: ``use_cache``, on a local store) maps the vectors from the file
    read-only instead of copying them: an index that will be added to needs ``mmap=False``.

    Every file's bytes are checked against the sha256 its manifest records (manifests
    from before checksums have none to check). Files that disagree may be a save in
    flight in another process: the read is retried once under the store's write lock
    (which that save holds) before the index is declared corrupt.

    Raises:
        IndexNotFoundError: no such index (names ``emofs index build``).
        IndexCorruptError: a file is missing, unreadable, does not match its manifest's
            checksum, or the files disagree (names the rebuild command).
    """
    check_index_name(name)
    mmap = use_cache if mmap is None else mmap
    try:
        return _load(store, name, use_cache, mmap=mmap)
    except IndexCorruptError as first:
        try:
            with store.writing():  # wait for a save in flight, then read again
                return _load(store, name, use_cache, mmap=mmap)
        except IndexCorruptError:
            raise
        except StoreError:  # cannot take the lock (read-only store): nobody is writing
            raise first from None


def verify_index(store: Store, name: str, *, drift: bool = True) -> str | None:
    """Why index ``name`` cannot be trusted, or None when its files match its manifest
    and its feature sets.

    Reads and checks every file as :func:`load_index` does (without the cache or a GPU
    copy: manifest content, checksums, kind / dim / rows against the FAISS object); an
    index whose manifest has no checksums (an older emofs) also has every stored vector's
    norm checked (unit, or zero). With ``drift``, the index is then compared with its
    feature sets (:func:`featurestore.index.drift.index_drift`: the id map, a sample of
    clips re-searched). The reason names the rebuild command.
    """
    try:
        loaded = _load(store, name, use_cache=False, gpu=False)
    except (IndexCorruptError, IndexNotFoundError) as exc:
        return str(exc)
    if not loaded.manifest.get("checksums"):
        bad = _bad_norms(loaded)
        if bad:
            return (f"index {name!r} holds {bad} vectors that are not unit length (damaged bytes): "
                    f"rebuild with `{build_command(loaded.manifest)} --rebuild`")
    if drift:
        from .drift import index_drift

        why = index_drift(store, loaded)
        if why:
            return f"index {name!r} {why}"
    return None


def _bad_norms(loaded: LoadedIndex, batch: int = 8192) -> int:
    """How many stored vectors have a norm that is neither ~1 nor 0."""
    index = loaded.index
    if loaded.kind == "ivf":
        index.make_direct_map()  # IVF lists need a row -> (list, offset) map to reconstruct
    bad = 0
    for start in range(0, index.ntotal, batch):
        vectors = index.reconstruct_n(start, min(batch, index.ntotal - start))  # (B, D)
        with np.errstate(invalid="ignore", over="ignore"):
            norms = np.linalg.norm(vectors.astype(np.float64), axis=1)  # (B,)
        bad += int((~((np.abs(norms - 1.0) <= 1e-3) | (norms <= 1e-6))).sum())
    return bad


def kind_mismatch(index: Any, kind: str | None) -> str | None:
    """How a deserialised FAISS ``index`` disagrees with the ``kind`` its manifest names
    (its class, its metric), or None when they agree."""
    import faiss

    classes = {"flat": faiss.IndexFlat, "ivf": faiss.IndexIVF, "hnsw": faiss.IndexHNSW}
    expected = classes.get(kind or "")
    if expected is None:
        return f"the manifest names kind {kind!r}"
    if not isinstance(index, expected):
        return f"the manifest says {kind} but the file holds a {type(index).__name__}"
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        return f"the file's metric is {index.metric_type}, not inner product"
    return None


def _mapped_index(store: Store, rel: str, manifest: dict[str, Any], rebuild_hint: str):
    """The FAISS index of local file ``rel`` memory-mapped read-only, after its checksum
    (computed in chunks: the bytes never sit in this process's memory); None when the file
    is missing. A file replaced while it was read is an IndexCorruptError (retried)."""
    import faiss

    path = store.path(rel)
    try:
        before = os.stat(path)
    except FileNotFoundError:
        return None
    want = (manifest.get("checksums") or {}).get("faiss")
    if want:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
        got = "sha256:" + digest.hexdigest()
        if got != want:
            raise IndexCorruptError(
                f"index file {path} is corrupt (sha256 {got[7:19]}... where its manifest says "
                f"{want[7:19]}...): rebuild with `{rebuild_hint}`")
    try:
        if manifest.get("kind") == "ivf" and os.environ.get(MMAP_IVF_ENV, "") not in ("1", "yes", "true"):
            # IVF lists read into memory from the file (never a bytes copy too): searching
            # memory-mapped lists (OnDiskInvertedLists) measured 2.1x slower (3.9 vs 1.9 ms a
            # query at 1M x 88, nprobe 384), and every list is touched within a few hundred
            # queries, so mapping them saves no resident memory in a server.
            index = faiss.read_index(path)
        else:  # flat / HNSW: the flat codes mapped; IVF with $EMOFS_INDEX_MMAP=1: the lists
            mapping = faiss.IO_FLAG_MMAP if manifest.get("kind") == "ivf" else faiss.IO_FLAG_MMAP_IFC
            index = faiss.read_index(path, mapping | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError as exc:
        raise IndexCorruptError(
            f"index file {path} is corrupt ({str(exc).splitlines()[0][:80]}): "
            f"rebuild with `{rebuild_hint}`") from exc
    after = os.stat(path)
    if (after.st_ino, after.st_size, after.st_mtime_ns) != (before.st_ino, before.st_size, before.st_mtime_ns):
        raise IndexCorruptError(f"index file {path} changed while it was read: rebuild with `{rebuild_hint}`")
    return index


def _load(store: Store, name: str, use_cache: bool, gpu: bool = True, mmap: bool = False) -> LoadedIndex:
    manifest = shared_manifest(store, name) if use_cache else read_manifest(store, name)
    paths = index_paths(name)
    if manifest is None:
        if read_bytes(store, paths["faiss"]) is not None:
            raise IndexCorruptError(
                f"index {name!r} has no manifest ({store.path(paths['manifest'])}): rebuild it "
                f"with `emofs index build --encoder ENCODER --name {name} --rebuild`"
            )
        available = ", ".join(store.index_names()) or "none"
        raise IndexNotFoundError(
            f"no index {name!r} in {store.uri} (available: {available}): build one with "
            f"`emofs index build --encoder {name.split('+')[0]}`"
        )
    stamp = (f"{manifest.get('updated_at')}|{manifest.get('rows')}|{manifest.get('kind')}|"
             f"{(manifest.get('checksums') or {}).get('manifest')}|{file_stamp(store, paths['faiss'])}")
    cached = cached_index(store, name, stamp) if use_cache else None
    if cached is not None:
        return cached
    if use_cache:  # one reader per index: concurrent first searches wait, never read it twice
        with _loading_lock(store, name):
            cached = cached_index(store, name, stamp)
            if cached is not None:
                return cached
            return _read(store, name, manifest, stamp, use_cache, gpu, mmap)
    return _read(store, name, manifest, stamp, use_cache, gpu, mmap)


_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


def _loading_lock(store: Store, name: str) -> threading.Lock:
    with _LOCKS_LOCK:
        return _LOCKS.setdefault((store.uri, name), threading.Lock())


def _read(store: Store, name: str, manifest: dict[str, Any], stamp: str, use_cache: bool, gpu: bool,
          mmap: bool) -> LoadedIndex:
    """Read index ``name``'s files (checked against ``manifest``) and cache them under ``stamp``."""
    import faiss
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = index_paths(name)
    rebuild_hint = build_command(manifest) + " --rebuild"
    problem = manifest_problem(manifest, name)
    if problem:
        raise IndexCorruptError(f"index {name!r} cannot be trusted: {problem}: rebuild with `{rebuild_hint}`")
    mapped = mmap and store.is_local
    if mapped:
        index = _mapped_index(store, paths["faiss"], manifest, rebuild_hint)
        if index is None:
            raise IndexCorruptError(
                f"index file {store.path(paths['faiss'])} is missing: rebuild with `{rebuild_hint}`")
    else:
        index = _read_index(store, paths["faiss"], manifest, rebuild_hint)
    raw_ids = read_bytes(store, paths["ids"])
    problem = None if raw_ids is None else checksum_problem(manifest, "ids", raw_ids)
    if problem:
        raise IndexCorruptError(
            f"index id map {store.path(paths['ids'])} is corrupt ({problem}): "
            f"rebuild with `{rebuild_hint}`")
    try:
        # ParquetFile, not read_table: read_table imports pyarrow.dataset (and pandas), 0.15 s
        # A BufferReader, not io.BytesIO: Arrow's reader threads then never need the GIL
        # (a native thread waiting for it while the interpreter exits aborts the process).
        ids = KeyColumn(pq.ParquetFile(pa.BufferReader(raw_ids)).read(columns=["clip_id"]).column("clip_id"))
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
    mismatch = kind_mismatch(index, kind)
    if mismatch:
        raise IndexCorruptError(f"index {name!r} files disagree ({mismatch}): rebuild with `{rebuild_hint}`")
    param = search_param_name(kind)
    if param and param in manifest.get("params", {}):
        set_search_param(index, kind, manifest["params"][param])
    loaded = LoadedIndex(name, index, ids, manifest, to_gpu(index, kind) if gpu else None, mapped=mapped)
    if use_cache:
        cache_index(store, name, stamp, loaded)
    return loaded


def _read_index(store: Store, rel: str, manifest: dict[str, Any], rebuild_hint: str):
    """The FAISS index of file ``rel`` read into memory (an object store, or one to add to)."""
    import faiss

    raw = read_bytes(store, rel)
    if raw is None:
        raise IndexCorruptError(f"index file {store.path(rel)} is missing: rebuild with `{rebuild_hint}`")
    problem = checksum_problem(manifest, "faiss", raw)
    if problem:
        raise IndexCorruptError(f"index file {store.path(rel)} is corrupt ({problem}): rebuild with `{rebuild_hint}`")
    try:
        return faiss.deserialize_index(np.frombuffer(raw, dtype=np.uint8))
    except RuntimeError as exc:
        raise IndexCorruptError(
            f"index file {store.path(rel)} is corrupt ({str(exc).splitlines()[0][:80]}): "
            f"rebuild with `{rebuild_hint}`") from exc
