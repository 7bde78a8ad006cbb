"""Reading an index back: :class:`LoadedIndex` and :func:`load_index` (cached per process)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import IndexCorruptError, IndexNotFoundError
from ..store import Store
from .catalog import build_command
from .files import (
    cache_index,
    cached_index,
    check_index_name,
    file_stamp,
    index_paths,
    read_bytes,
    read_manifest,
)
from .kinds import search_param_name, set_search_param, to_gpu

__all__ = ["LoadedIndex", "load_index"]


@dataclass
class LoadedIndex:
    """An index read back from the store.

    Attributes:
        name: index name.
        index: the CPU FAISS index (search parameters already set).
        clip_ids: row -> clip id.
        manifest: the manifest dict.
        gpu_index: the same index on the GPU(s) when faiss sees one, else None.
        direct_map: whether an IVF index already has its row -> (list, offset) map.
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
        """``flat``, ``ivf`` or ``hnsw``."""
        return self.manifest["kind"]

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self.index.d)

    def row_of(self) -> dict[str, int]:
        """clip id -> row (built on first use)."""
        if self._row_of is None:
            self._row_of = {c: i for i, c in enumerate(self.clip_ids)}
        return self._row_of


def load_index(store: Store, name: str, *, use_cache: bool = True) -> LoadedIndex:
    """Read index ``name`` (cached per process until its manifest changes).

    Raises:
        IndexNotFoundError: no such index (names ``emofs index build``).
        IndexCorruptError: a file is unreadable or the files disagree.
    """
    import faiss
    import pyarrow.parquet as pq

    check_index_name(name)
    manifest = read_manifest(store, name)
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
    stamp = f"{manifest.get('updated_at')}|{manifest.get('rows')}|{file_stamp(store, paths['faiss'])}"
    cached = cached_index(store, name, stamp) if use_cache else None
    if cached is not None:
        return cached
    rebuild_hint = build_command(manifest) + " --rebuild"
    raw = read_bytes(store, paths["faiss"])
    if raw is None:
        raise IndexCorruptError(
            f"index file {store.path(paths['faiss'])} is missing: rebuild with `{rebuild_hint}`")
    try:
        index = faiss.deserialize_index(np.frombuffer(raw, dtype=np.uint8))
    except RuntimeError as exc:
        raise IndexCorruptError(
            f"index file {store.path(paths['faiss'])} is corrupt ({str(exc).splitlines()[0][:80]}): "
            f"rebuild with `{rebuild_hint}`") from exc
    raw_ids = read_bytes(store, paths["ids"])
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
    param = search_param_name(kind)
    if param and param in manifest.get("params", {}):
        set_search_param(index, kind, manifest["params"][param])
    loaded = LoadedIndex(name, index, ids, manifest, to_gpu(index, kind))
    if use_cache:
        cache_index(store, name, stamp, loaded)
    return loaded
