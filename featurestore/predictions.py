"""Prediction datasets: ``predictions/<run>.lance``, one row per clip, upserted by clip_id.

Row schema::

    clip_id            string
    run_id             string
    label              string          predicted class
    confidence         float32         its probability
    probs              list<float32>   every class, in vocabulary order
    prob_<label>       float32         one column per class (for SQL filters)
    model_fingerprint  string          hash of the checkpoint + config
    predicted_at       timestamp[us, UTC]
    modalities         string          feature sets the clip was predicted from
                                       (``egemaps+mae``); null in rows written before

The vocabulary (JSON list) and run id are in the schema metadata.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Sequence

import numpy as np
import pyarrow as pa

from .errors import InputError
from .schema import predictions_name
from .store import Store

__all__ = [
    "predictions_name",
    "prediction_schema",
    "prob_columns",
    "write_predictions",
    "read_predictions",
    "VOCABULARY_KEY",
    "RUN_KEY",
]

VOCABULARY_KEY = "emofs.vocabulary"
RUN_KEY = "emofs.run"


def prob_columns(vocabulary: Sequence[str]) -> list[str]:
    """``prob_<label>`` column names (non-alphanumerics become ``_``; clashes get a suffix)."""
    names: list[str] = []
    for label in vocabulary:
        base = "prob_" + (re.sub(r"[^0-9A-Za-z_]", "_", str(label)) or "_")
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def prediction_schema(vocabulary: Sequence[str], run_id: str) -> pa.Schema:
    """Arrow schema of ``predictions/<run>.lance`` for a vocabulary."""
    fields = [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("run_id", pa.string()),
        pa.field("label", pa.string()),
        pa.field("confidence", pa.float32()),
        pa.field("probs", pa.list_(pa.float32())),
        *[pa.field(c, pa.float32()) for c in prob_columns(vocabulary)],
        pa.field("model_fingerprint", pa.string()),
        pa.field("predicted_at", pa.timestamp("us", tz="UTC")),
        pa.field("modalities", pa.string()),
    ]
    return pa.schema(fields, metadata={VOCABULARY_KEY: json.dumps(list(vocabulary)), RUN_KEY: run_id})


def write_predictions(
    store: Store,
    run_id: str,
    clip_ids: Sequence[str],
    probs: np.ndarray,
    vocabulary: Sequence[str],
    *,
    model_fingerprint: str,
    predicted_at: datetime | None = None,
    modalities: Sequence[str] | None = None,
) -> int:
    """Upsert one batch of predictions into ``predictions/<run_id>.lance``.

    Args:
        store: the store.
        run_id: name of the prediction dataset (usually the run directory's name).
        clip_ids: N clip ids.
        probs: ``(N, C)`` class probabilities in ``vocabulary`` order.
        vocabulary: the C labels.
        model_fingerprint: hash of the model that made them.
        predicted_at: timestamp for every row (default: now).
        modalities: N ``+``-joined feature-set names each clip was predicted from (None:
            the column is left null).

    Returns:
        The dataset version after the write.

    Raises:
        InputError: shapes disagree, or the dataset exists with another vocabulary.
    """
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 2 or probs.shape != (len(clip_ids), len(vocabulary)):
        raise InputError(
            f"probs must be (N, C) = ({len(clip_ids)}, {len(vocabulary)}) (got {probs.shape})"
        )
    name = predictions_name(run_id)
    schema = prediction_schema(vocabulary, run_id)
    ds = store.dataset(name)
    if ds is not None:
        stored = json.loads((ds.schema.metadata or {}).get(VOCABULARY_KEY.encode(), b"[]"))
        if stored != list(vocabulary):
            raise InputError(
                f"{name} holds predictions over another vocabulary ({', '.join(stored)}): "
                "write these under another --name, or remove the old dataset first"
            )
    best = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)  # (N,)
    when = predicted_at or datetime.now(timezone.utc)
    n, c = probs.shape
    columns = {
        "clip_id": pa.array(list(clip_ids), pa.string()),
        "run_id": pa.array([run_id] * n, pa.string()),
        "label": pa.array([vocabulary[i] for i in best], pa.string()),
        "confidence": pa.array(probs[np.arange(n), best] if n else [], pa.float32()),
        "probs": pa.ListArray.from_arrays(
            pa.array(np.arange(0, n * c + 1, c, dtype=np.int32)), pa.array(probs.reshape(-1))
        ),
    }
    for j, col in enumerate(prob_columns(vocabulary)):
        columns[col] = pa.array(probs[:, j], pa.float32())
    columns["model_fingerprint"] = pa.array([model_fingerprint] * n, pa.string())
    columns["predicted_at"] = pa.array([when] * n, pa.timestamp("us", tz="UTC"))
    if modalities is not None and len(modalities) != n:
        raise InputError(f"modalities must name one entry per clip ({n}; got {len(modalities)})")
    columns["modalities"] = pa.array(list(modalities) if modalities is not None else [None] * n, pa.string())
    table = pa.table(columns, schema=schema)
    return store.upsert(name, table, key="clip_id", schema=schema)


def read_predictions(store: Store, run_id: str, *, where: str | None = None):
    """A prediction run as a polars DataFrame (empty if it does not exist)."""
    import polars as pl

    table = store.table(predictions_name(run_id), where=where)
    return pl.DataFrame() if table is None else pl.from_arrow(table)
