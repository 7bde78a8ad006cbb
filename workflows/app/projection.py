"""The map: a 2-D projection of a feature set or a run's learned space, cached in the store.

Sources: ``features:<name>`` (the pooled vectors of a feature set) or ``run:<name>`` (the
class probabilities a prediction run learned to output). PCA (numpy, on the covariance,
so 100k x 1024 takes well under a second) unless ``umap-learn`` is installed. The result
is kept as ``app/projections/<source>.lance`` with the source dataset's version and
fingerprint in its metadata, and recomputed only when the source changed.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pyarrow as pa

from featurestore.features import read_features
from featurestore.inventory import FINGERPRINT_KEY
from featurestore.predictions import read_predictions
from featurestore.schema import features_name, predictions_name
from featurestore.store import Store

from .errors import InputError, NotFoundError
from .queries import check_run

__all__ = ["project", "projection", "map_route", "pca_2d", "PROJECTION_DIR", "STAMP_KEY"]

PROJECTION_DIR = "app/projections"
STAMP_KEY = "emofs.projection"


def pca_2d(x: np.ndarray) -> np.ndarray:
    """The first two principal components of ``x`` ``(N, D)`` -> ``(N, 2)`` float32."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) == 0:
        return np.zeros((0, 2), np.float32)
    centred = x - x.mean(axis=0)  # (N, D)
    std = centred.std(axis=0)
    centred /= np.where(std < 1e-12, 1.0, std)  # z-scored, as the index does
    cov = centred.T @ centred / max(1, len(x) - 1)  # (D, D)
    _, vecs = np.linalg.eigh(cov)
    axes = vecs[:, ::-1][:, :2]  # (D, 2) largest eigenvalues first
    out = centred @ axes  # (N, 2)
    if out.shape[1] < 2:
        out = np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    return out.astype(np.float32)


def project(x: np.ndarray) -> tuple[np.ndarray, str]:
    """``(N, 2)`` coordinates and the method: UMAP when installed (and N > 15), else PCA."""
    try:
        import umap  # type: ignore[import-not-found]
    except ImportError:
        return pca_2d(x), "pca"
    if len(x) <= 15:
        return pca_2d(x), "pca"
    return umap.UMAP(n_components=2, random_state=0).fit_transform(x).astype(np.float32), "umap"


def _source(store: Store, source: str) -> tuple[str, str, str]:
    kind, _, name = (source or "").partition(":")
    if kind == "features":
        dataset = features_name(name)
        if name not in store.feature_sets():
            raise NotFoundError(f"no feature set {name!r} (available: {', '.join(store.feature_sets()) or 'none'})"
                                f": run `emofs extract --encoders {name}` first")
    elif kind == "run":
        check_run(store, name)
        dataset = predictions_name(name)
    else:
        raise InputError(f"source must be features:NAME or run:NAME (got {source!r})")
    ds = store.dataset(dataset)
    fingerprint = (ds.schema.metadata or {}).get(FINGERPRINT_KEY.encode(), b"").decode()
    return kind, name, f"{ds.version}|{fingerprint}"


def projection(store: Store, source: str) -> dict[str, Any]:
    """The cached (or freshly computed) 2-D map of ``source``.

    Returns:
        ``{"source", "method", "clip_ids", "x", "y", "cached"}``.

    Raises:
        NotFoundError: no such feature set or run; InputError: a malformed source.
    """
    kind, name, stamp = _source(store, source)
    cache = f"{PROJECTION_DIR}/{re.sub(r'[^A-Za-z0-9_.+-]', '_', kind + '-' + name)}.lance"
    ds = store.dataset(cache)
    meta = json.loads((ds.schema.metadata or {}).get(STAMP_KEY.encode(), b"{}")) if ds is not None else {}
    if meta.get("stamp") == stamp:
        table = ds.to_table()
        return {"source": source, "method": meta["method"], "cached": True,
                "clip_ids": table.column("clip_id").to_pylist(),
                "x": table.column("x").to_numpy(), "y": table.column("y").to_numpy()}
    if kind == "features":
        matrix = read_features(store, name)
        ids, vectors = list(matrix.clip_ids), matrix.vectors  # (N, D)
    else:
        frame = read_predictions(store, name)
        ids = frame["clip_id"].to_list()
        vectors = np.array(frame["probs"].to_list(), dtype=np.float32).reshape(len(ids), -1)  # (N, C)
    xy, method = project(vectors)  # (N, 2)
    schema = pa.schema([pa.field("clip_id", pa.string(), nullable=False), pa.field("x", pa.float32()),
                        pa.field("y", pa.float32())],
                       metadata={STAMP_KEY: json.dumps({"stamp": stamp, "method": method})})
    table = pa.table({"clip_id": ids, "x": xy[:, 0], "y": xy[:, 1]}, schema=schema)
    with store.writing():
        store.remove(cache)
        store.upsert(cache, table, schema=schema)
    return {"source": source, "method": method, "cached": False, "clip_ids": ids,
            "x": xy[:, 0], "y": xy[:, 1]}


def _colours(store: Store, ids: list[str], colour: str, run: str | None) -> list[Any]:
    import polars as pl

    if colour == "prediction":
        if not run:
            raise InputError("colour=prediction needs run=NAME")
        check_run(store, run)
        frame = read_predictions(store, run).select("clip_id", pl.col("label").alias("value"))
    else:
        clips = store.clips(columns=["clip_id"] + ([] if colour == "clip_id" else [colour])) \
            if colour in _clip_columns(store) else None
        if clips is None:
            raise InputError(f"colour must be prediction or a clip column (got {colour!r}; "
                             f"columns: {', '.join(_clip_columns(store))})")
        frame = clips.select("clip_id", pl.col(colour).cast(pl.Utf8).alias("value"))
    lookup = dict(zip(frame["clip_id"].to_list(), frame["value"].to_list()))
    return [lookup.get(c) for c in ids]


def _clip_columns(store: Store) -> list[str]:
    from featurestore.schema import CLIPS

    ds = store.dataset(CLIPS)
    return ds.schema.names if ds is not None else []


def map_route(request):
    """``GET /api/map?source=features:NAME|run:NAME&colour=label|prediction|COLUMN&run=``:
    2-D coordinates of every clip of the source, with the colour value of each."""
    from .api import reply

    store = request.app.state.store
    params = request.query_params
    out = projection(store, params.get("source", ""))
    values = _colours(store, out["clip_ids"], params.get("colour") or "label", params.get("run") or None)
    out["x"] = np.round(out["x"], 4).tolist()
    out["y"] = np.round(out["y"], 4).tolist()
    out["values"] = values
    return reply(out)
