"""An index's 2-D layout: the first two principal components of the vectors it searches.

Computed once per index version (a build or an update writes it, after the index's own
files) and kept as ``index/<name>.layout.arrow`` (Arrow IPC: clip_id, x, y), stamped with
the digest of the manifest it belongs to; a reader whose manifest has another digest
computes it again (:func:`index_layout`). The map of the analyst app draws it.

PCA is z-scored, as :func:`pca_2d`, and computed streaming (:func:`pca_2d_chunks`: two
passes over chunks of rows), so a million vectors never sit in memory twice.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import StoreError
from ..schema import INDEX_DIR
from ..store import Store
from .files import read_bytes, read_manifest, write_bytes

log = logging.getLogger(__name__)

__all__ = ["pca_2d", "pca_2d_chunks", "layout_path", "index_layout", "save_layout", "LAYOUT_KEY",
           "xy_table", "read_xy_table"]

LAYOUT_KEY = "emofs.layout"
_CHUNK = 65536


def layout_path(name: str) -> str:
    """Store-relative path of index ``name``'s layout file."""
    return f"{INDEX_DIR}/{name}.layout.arrow"


def pca_2d(x: np.ndarray) -> np.ndarray:
    """The first two principal components of ``x`` ``(N, D)`` (z-scored) -> ``(N, 2)`` float32."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) == 0:
        return np.zeros((0, 2), np.float32)
    centred = x - x.mean(axis=0)  # (N, D)
    std = centred.std(axis=0)
    centred /= np.where(std < 1e-12, 1.0, std)
    cov = centred.T @ centred / max(1, len(x) - 1)  # (D, D)
    _, vecs = np.linalg.eigh(cov)
    axes = vecs[:, ::-1][:, :2]  # (D, 2) largest eigenvalues first
    out = centred @ axes  # (N, 2)
    if out.shape[1] < 2:
        out = np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    return out.astype(np.float32)


def pca_2d_chunks(chunks: Callable[[], Iterator[np.ndarray]]) -> np.ndarray:
    """:func:`pca_2d` of the rows ``chunks()`` yields ``(B, D)`` at a time, in two passes
    (moments, then projection): memory is one chunk plus ``(D, D)``, not the matrix.
    Each chunk's products run in float32 around a reference row (no cancellation), summed
    in float64."""
    n, ref, total, outer = 0, None, None, None
    for x in chunks():
        x = np.asarray(x, dtype=np.float32)  # (B, D)
        if ref is None:
            ref = x.mean(axis=0)
            total, outer = np.zeros(x.shape[1]), np.zeros((x.shape[1], x.shape[1]))
        c = x - ref  # (B, D)
        n += len(x)
        total += c.sum(axis=0, dtype=np.float64)
        outer += (c.T @ c).astype(np.float64)  # (D, D)
    if not n:
        return np.zeros((0, 2), np.float32)
    shift = total / n  # mean - ref
    cov = outer - n * np.outer(shift, shift)  # (D, D) centred sums of products
    std = np.sqrt(np.clip(np.diag(cov) / n, 0, None))
    scale = np.where(std < 1e-12, 1.0, std)
    _, vecs = np.linalg.eigh(cov / np.outer(scale, scale) / max(1, n - 1))
    axes = vecs[:, ::-1][:, :2]
    if axes.shape[1] < 2:
        axes = np.pad(axes, ((0, 0), (0, 2 - axes.shape[1])))
    mean = (ref + shift).astype(np.float32)
    weights = (axes / scale[:, None]).astype(np.float32)  # (D, 2) z-score folded in
    out = np.empty((n, 2), np.float32)
    at = 0
    for x in chunks():
        out[at : at + len(x)] = (np.asarray(x, dtype=np.float32) - mean) @ weights
        at += len(x)
    return out


def _rows_of(index) -> Callable[[], Iterator[np.ndarray]]:
    n = index.ntotal

    def rows() -> Iterator[np.ndarray]:
        for start in range(0, n, _CHUNK):
            yield index.reconstruct_n(start, min(_CHUNK, n - start))  # (B, D)

    return rows


def save_layout(store: Store, name: str, ids, digest: str, *, vectors: np.ndarray | None = None,
                index: Any = None):
    """Compute and write index ``name``'s layout for manifest ``digest`` (from ``vectors``
    ``(N, D)`` when given, else streaming from the FAISS ``index``); returns the Arrow
    table (clip_id, x, y). A store that cannot be written keeps none (logged)."""
    import pyarrow as pa

    if vectors is not None:
        xy = pca_2d_chunks(lambda: (vectors[s : s + _CHUNK] for s in range(0, len(vectors), _CHUNK)))
    else:
        xy = pca_2d_chunks(_rows_of(index))  # IVF: reconstruct_n walks the lists
    ids = ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(list(ids), pa.string())
    table, data = xy_table(ids, xy, {LAYOUT_KEY: json.dumps({"digest": digest, "method": "pca"})})
    try:
        write_bytes(store, layout_path(name), data)
    except (StoreError, OSError) as exc:
        log.warning(f"the layout of index {name!r} is not kept ({exc})")
    return table


def xy_table(ids, xy: np.ndarray, metadata: dict[str, str]):
    """``(table, Arrow IPC file bytes)`` of a 2-D map: ``clip_id``, ``x``, ``y`` (float32)
    from ``ids`` (an Arrow string array) and ``xy`` ``(N, 2)``, with schema ``metadata``."""
    import pyarrow as pa

    schema = pa.schema([pa.field("clip_id", pa.string(), nullable=False), pa.field("x", pa.float32()),
                        pa.field("y", pa.float32())], metadata=metadata)
    table = pa.table({"clip_id": ids.cast(pa.string()), "x": np.ascontiguousarray(xy[:, 0]),
                      "y": np.ascontiguousarray(xy[:, 1])}, schema=schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, schema) as writer:
        writer.write_table(table)
    return table, sink.getvalue().to_pybytes()


def read_xy_table(store: Store, rel: str):
    """The Arrow table of a stored map file (memory-mapped on a local store); None when it
    is absent or damaged (the caller computes it again)."""
    import pyarrow as pa

    try:
        if store.is_local:
            return pa.ipc.open_file(pa.memory_map(store.path(rel))).read_all()  # zero-copy
        raw = read_bytes(store, rel)
        return None if raw is None else pa.ipc.open_file(pa.BufferReader(raw)).read_all()
    except (OSError, pa.ArrowInvalid):
        return None


def index_layout(store: Store, name: str) -> tuple[Any, bool]:
    """``(table (clip_id, x, y), cached)``: index ``name``'s stored layout when it belongs to
    the current manifest, else computed from the index (memory-mapped, in chunks) and stored.

    Raises:
        IndexNotFoundError, IndexCorruptError: as :func:`~.load.load_index`.
    """
    from .load import load_index

    manifest = read_manifest(store, name) or {}
    digest = (manifest.get("checksums") or {}).get("manifest") or str(manifest.get("updated_at"))
    table = read_xy_table(store, layout_path(name))
    if table is not None:
        saved = json.loads((table.schema.metadata or {}).get(LAYOUT_KEY.encode(), b"{}"))
        if saved.get("digest") == digest:
            return table, True
    loaded = load_index(store, name)
    # written through a temporary and a move: a reader sees the old file or the new one
    return save_layout(store, name, loaded.clip_ids.to_arrow(), digest, index=loaded.index), False
