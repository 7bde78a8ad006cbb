"""The map: a 2-D projection of a search space, computed once per source version and cached.

Sources: ``index:<name>`` (the vectors an index searches: what "similar" means there, the
page's default; its layout is computed by the index build and kept next to the index,
:mod:`featurestore.index.layout`), ``features:<name>`` (a feature set's pooled vectors) or ``run:<name>``
(the class probabilities a prediction run output). PCA (z-scored, as :func:`pca_2d`)
is computed streaming, in chunks of rows, so a million clips never sit in memory twice;
UMAP replaces it when ``umap-learn`` is installed and the source is small enough.

A feature set's or run's map is kept in the store as ``app/projections/<source>.arrow`` (an Arrow IPC file:
clip_id, x, y) stamped with the source's version; a request whose stamp matches reads it back (memory-mapped
on a local store) instead of recomputing. ``GET /api/map?format=bin`` serves it as one
compact binary answer (:func:`map_bytes`); ``format=json`` (the default) as JSON lists.
"""

from __future__ import annotations

import json
import logging
import re
import struct
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from featurestore.errors import StoreError
from featurestore.index import read_manifest
from featurestore.index.files import write_bytes
from featurestore.index.layout import index_layout, pca_2d, pca_2d_chunks, read_xy_table, xy_table
from featurestore.inventory import FINGERPRINT_KEY
from featurestore.predictions import read_predictions
from featurestore.schema import features_name, predictions_name
from featurestore.store import Store

from .errors import InputError, NotFoundError
from .queries import check_run

log = logging.getLogger(__name__)

__all__ = ["project", "projection", "map_route", "pca_2d", "pca_2d_chunks", "map_bytes",
           "PROJECTION_DIR", "STAMP_KEY", "MAP_MAGIC", "UMAP_MAX"]

PROJECTION_DIR = "app/projections"
STAMP_KEY = "emofs.projection"
#: First bytes of the binary map answer.
MAP_MAGIC = b"EMAP"
#: Sources with more rows are projected with PCA even when umap-learn is installed.
UMAP_MAX = 50_000
_CHUNK = 65536


def project(x: np.ndarray) -> tuple[np.ndarray, str]:
    """``(N, 2)`` coordinates and the method: UMAP when installed (and 15 < N <= UMAP_MAX), else PCA."""
    try:
        import umap  # type: ignore[import-not-found]
    except ImportError:
        return pca_2d(x), "pca"
    if not 15 < len(x) <= UMAP_MAX:
        return pca_2d(x), "pca"
    return umap.UMAP(n_components=2, random_state=0).fit_transform(x).astype(np.float32), "umap"


# ------------------------------------------------------------------ sources
def _source(store: Store, source: str) -> tuple[str, str, str]:
    """``(kind, name, stamp)``: the stamp changes whenever the source's vectors may have."""
    kind, _, name = (source or "").partition(":")
    if kind == "index":
        if name not in store.index_names():
            raise NotFoundError(f"no index {name!r} (available: {', '.join(store.index_names()) or 'none'})"
                                f": build one with `emofs index build --encoder {name or 'NAME'}`")
        manifest = read_manifest(store, name) or {}
        digest = (manifest.get("checksums") or {}).get("manifest") or manifest.get("updated_at")
        return kind, name, f"{digest}|{manifest.get('rows')}"
    if kind == "features":
        dataset = features_name(name)
        if name not in store.feature_sets():
            raise NotFoundError(f"no feature set {name!r} (available: {', '.join(store.feature_sets()) or 'none'})"
                                f": run `emofs extract --encoders {name}` first")
    elif kind == "run":
        check_run(store, name)
        dataset = predictions_name(name)
    else:
        raise InputError(f"source must be index:NAME, features:NAME or run:NAME (got {source!r})")
    ds = store.dataset(dataset)
    fingerprint = (ds.schema.metadata or {}).get(FINGERPRINT_KEY.encode(), b"").decode()
    return kind, name, f"{ds.version}|{fingerprint}"


def _compute(store: Store, kind: str, name: str) -> tuple[pa.Array, np.ndarray, str]:
    """``(clip ids, (N, 2) coordinates, method)`` of a source, freshly computed."""
    if kind == "features":
        ds = store.dataset(features_name(name))
        if ds.count_rows() <= UMAP_MAX:
            table = ds.to_table(columns=["clip_id", "vector"])
            vectors = _vectors(table.column("vector"))  # (N, D)
            xy, method = project(vectors)
            return table.column("clip_id").combine_chunks(), xy, method
        ids = [b.column(0) for b in ds.to_batches(columns=["clip_id"], batch_size=_CHUNK)]

        def feature_rows() -> Iterator[np.ndarray]:
            for batch in ds.to_batches(columns=["vector"], batch_size=_CHUNK):
                yield _vectors(batch.column(0))  # (B, D)

        return pa.concat_arrays(ids) if ids else pa.array([], pa.string()), pca_2d_chunks(feature_rows), "pca"
    frame = read_predictions(store, name)
    ids = frame["clip_id"].to_arrow()
    vectors = np.array(frame["probs"].to_list(), dtype=np.float32).reshape(len(frame), -1)  # (N, C)
    xy, method = project(vectors)
    return ids, xy, method


def _vectors(column) -> np.ndarray:
    """A ``fixed_size_list`` vector column as ``(N, D)`` float32."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    dim = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)


def _cache_path(kind: str, name: str) -> str:
    return f"{PROJECTION_DIR}/{re.sub(r'[^A-Za-z0-9_.+-]', '_', kind + '-' + name)}.arrow"


def projection(store: Store, source: str) -> dict[str, Any]:
    """The cached (or freshly computed and cached) 2-D map of ``source``.

    Returns:
        ``{"source", "method", "cached", "clip_ids" (an Arrow string array), "x", "y"
        ((N,) float32)}``.

    Raises:
        NotFoundError: no such index, feature set or run; InputError: a malformed source.
    """
    kind, name, stamp = _source(store, source)
    if kind == "index":  # the index's own layout, written by its build (featurestore.index.layout)
        table, cached = index_layout(store, name)
        return {"source": source, "method": "pca", "cached": cached,
                "clip_ids": table.column("clip_id").combine_chunks(),
                "x": table.column("x").to_numpy(), "y": table.column("y").to_numpy()}
    rel = _cache_path(kind, name)
    table = read_xy_table(store, rel)
    meta = json.loads((table.schema.metadata or {}).get(STAMP_KEY.encode(), b"{}")) if table is not None else {}
    if table is not None and meta.get("stamp") == stamp:
        return {"source": source, "method": meta["method"], "cached": True,
                "clip_ids": table.column("clip_id").combine_chunks(),
                "x": table.column("x").to_numpy(), "y": table.column("y").to_numpy()}
    ids, xy, method = _compute(store, kind, name)
    table, data = xy_table(ids, xy, {STAMP_KEY: json.dumps({"stamp": stamp, "method": method})})
    x, y = table.column("x").to_numpy(), table.column("y").to_numpy()
    try:
        with store.writing():
            write_bytes(store, rel, data)
    except (StoreError, OSError) as exc:  # a read-only store: served, just not kept
        log.warning(f"the map of {source} is not cached in the store ({exc})")
    return {"source": source, "method": method, "cached": False, "clip_ids": ids, "x": x, "y": y}


# ------------------------------------------------------------------ colours
def _colours(store: Store, ids: pa.Array, colour: str, run: str | None) -> pa.Array:
    """The colour value (a string or null) of each of ``ids``, aligned with them."""
    import polars as pl

    if colour == "prediction":
        if not run:
            raise InputError("colour=prediction needs run=NAME")
        check_run(store, run)
        frame = read_predictions(store, run).select("clip_id", pl.col("label").alias("value"))
    else:
        columns = _clip_columns(store)
        if colour not in columns:
            raise InputError(f"colour must be prediction or a clip column (got {colour!r}; "
                             f"columns: {', '.join(columns)})")
        clips = store.clips(columns=["clip_id"] + ([] if colour == "clip_id" else [colour]))
        frame = clips.select("clip_id", pl.col(colour).cast(pl.Utf8).alias("value"))
    frame = frame.unique(subset="clip_id", keep="first")
    points = pl.DataFrame({"clip_id": pl.Series(ids)})
    joined = points.join(frame, on="clip_id", how="left", maintain_order="left")
    return joined["value"].to_arrow()


def _clip_columns(store: Store) -> list[str]:
    from featurestore.schema import CLIPS

    ds = store.dataset(CLIPS)
    return ds.schema.names if ds is not None else []


def map_bytes(out: dict[str, Any], values: pa.Array) -> bytes:
    """The binary map answer: ``EMAP``, a little-endian uint32 header length, the header
    (JSON: source, method, cached, n, ``values`` (the distinct colour values) and
    ``sections``: name -> [byte offset, byte length]), then the sections, each 8-byte
    aligned: ``x``, ``y`` (float32), ``codes`` (int32 index into ``values``, -1: none),
    ``id_offsets`` (int32, N+1) and ``id_bytes`` (the clip ids' UTF-8, back to back)."""
    import pyarrow.compute as pc

    ids = out["clip_ids"].cast(pa.string())
    n = len(ids)
    encoded = pc.dictionary_encode(values) if len(values) else pa.DictionaryArray.from_arrays(
        pa.array([], pa.int32()), pa.array([], pa.string()))
    codes = encoded.indices.cast(pa.int32()).fill_null(-1).to_numpy(zero_copy_only=False).astype("<i4")
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int32)[ids.offset : ids.offset + n + 1] if n else \
        np.zeros(1, np.int32)
    data = ids.buffers()[2]
    id_bytes = (memoryview(data)[int(offsets[0]) : int(offsets[-1])] if n and data is not None else b"")
    sections = [("x", np.asarray(out["x"], "<f4").tobytes()), ("y", np.asarray(out["y"], "<f4").tobytes()),
                ("codes", codes.tobytes()), ("id_offsets", (offsets - offsets[0]).astype("<i4").tobytes()),
                ("id_bytes", bytes(id_bytes))]
    header = {"source": out["source"], "method": out["method"], "cached": out["cached"], "n": n,
              "values": encoded.dictionary.to_pylist(), "sections": {}}

    def layout(header_len: int) -> int:
        at = _align(8 + header_len)
        for name, blob in sections:
            header["sections"][name] = [at, len(blob)]
            at = _align(at + len(blob))
        return at

    text = json.dumps(header).encode()
    for _ in range(3):  # the offsets are in the header: settle its length
        layout(len(text))
        text = json.dumps(header).encode()
    layout(len(text))
    parts = [MAP_MAGIC, struct.pack("<I", len(text)), text]
    at = 8 + len(text)
    for name, blob in sections:
        start = header["sections"][name][0]
        parts.append(b"\0" * (start - at))
        parts.append(blob)
        at = start + len(blob)
    return b"".join(parts)


def _align(at: int) -> int:
    return (at + 7) // 8 * 8


def map_route(request):
    """``GET /api/map?source=index:NAME|features:NAME|run:NAME&colour=label|prediction|COLUMN&run=&format=json|bin``:
    2-D coordinates of every clip of the source, with the colour value of each (``bin``:
    the compact binary of :func:`map_bytes`, what the page loads)."""
    from starlette.responses import Response

    from .api import reply

    store = request.app.state.store
    params = request.query_params
    fmt = params.get("format") or "json"
    if fmt not in ("json", "bin"):
        raise InputError(f"format must be json or bin (got {fmt!r})")
    out = projection(store, params.get("source", ""))
    values = _colours(store, out["clip_ids"], params.get("colour") or "label", params.get("run") or None)
    if fmt == "bin":
        return Response(map_bytes(out, values), media_type="application/octet-stream",
                        headers={"Cache-Control": "no-store"})
    return reply({"source": out["source"], "method": out["method"], "cached": out["cached"],
                  "clip_ids": out["clip_ids"].to_pylist(), "x": np.round(out["x"], 4).tolist(),
                  "y": np.round(out["y"], 4).tolist(), "values": values.to_pylist()})
