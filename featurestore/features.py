"""Feature sets: ``features/<name>.lance``, one row per clip, described by their spec.

Row schema::

    clip_id      string
    vector       fixed_size_list<float16|float32>[D]     pooled embedding
    tokens       list<fixed_size_list<dtype>[Dt]>        optional token sequence (LLM)
    fingerprint  string                                  spec fingerprint of this row

The spec (weights, revision, preprocessing, pooling, dim, dtype, code version ...) is JSON
in the schema metadata; its fingerprint decides which rows are up to date.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from .errors import InputError, MissingFeatureSetError
from .filters import validate_where
from .finite import finite_rows
from .inventory import FINGERPRINT_KEY, SPEC_KEY
from .schema import features_name
from .store import Store, sql_in, sql_quote

__all__ = [
    "spec_fingerprint",
    "features_name",
    "feature_schema",
    "feature_table",
    "write_features",
    "read_features",
    "feature_spec",
    "up_to_date_clip_ids",
    "FeatureMatrix",
]

_DTYPES = {"float16": pa.float16(), "float32": pa.float32()}
# Longer clip-id selections are filtered in Arrow instead of a SQL IN list.
_IN_LIST_LIMIT = 1000


def spec_fingerprint(spec: dict[str, Any]) -> str:
    """A short stable hash of a spec (canonical JSON)."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def feature_schema(
    dim: int, dtype: str, spec: dict[str, Any], *, token_dim: int | None = None
) -> pa.Schema:
    """Arrow schema of a feature set (spec + fingerprint in the metadata)."""
    if dtype not in _DTYPES:
        raise InputError(f"--dtype must be float16 or float32 (got {dtype!r})")
    value = _DTYPES[dtype]
    fields = [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("vector", pa.list_(value, dim)),
    ]
    if token_dim:
        fields.append(pa.field("tokens", pa.list_(pa.list_(value, token_dim))))
    fields.append(pa.field("fingerprint", pa.string()))
    metadata = {SPEC_KEY: json.dumps(spec, sort_keys=True, default=str),
                FINGERPRINT_KEY: spec_fingerprint(spec)}
    return pa.schema(fields, metadata=metadata)


def write_features(
    store: Store,
    name: str,
    clip_ids: Sequence[str],
    vectors: np.ndarray,
    spec: dict[str, Any],
    *,
    dtype: str = "float16",
    tokens: Sequence[np.ndarray] | None = None,
) -> int:
    """Upsert one batch of a feature set.

    Args:
        vectors: ``(N, D)`` pooled embeddings, one row per clip id.
        spec: the encoder spec; stored in the schema metadata, its fingerprint per row.
        tokens: optional list of ``(T_i, Dt)`` arrays (T may differ per clip).

    A spec whose vector/token types match the stored ones updates rows in place (older
    rows keep their old fingerprint until re-extracted). A spec that changes the dim or
    dtype starts a new version of the dataset holding only the new rows (older versions
    stay readable through Lance's version history).

    Returns:
        The dataset version after the write.
    """
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[0] != len(clip_ids):
        raise InputError(
            f"vectors must be (N, D) with N = {len(clip_ids)} clip ids (got {vectors.shape})"
        )
    token_dim = None
    if tokens is not None:
        if len(tokens) != len(clip_ids):
            raise InputError("tokens must hold one (T, Dt) array per clip id")
    good = finite_rows(vectors, tokens, dtype if dtype in _DTYPES else None)  # stored dtype: 1e5 is inf in float16
    if not good.all():
        bad = [clip_ids[i] for i in np.flatnonzero(~good)]
        raise InputError(
            f"feature set {name!r}: {len(bad)} of {len(clip_ids)} rows hold NaN or inf (or values "
            f"beyond {dtype}), e.g. {', '.join(map(str, bad[:3]))}: leave them out (the extract and "
            "import commands record them in errors.lance) or store float32")
    if tokens is not None:
        token_dim = int(np.asarray(tokens[0]).shape[-1])
    schema = feature_schema(vectors.shape[1], dtype, spec, token_dim=token_dim)
    table = feature_table(clip_ids, vectors, tokens, schema)

    dataset = features_name(name)
    with store.writing():  # the type check, the write and the metadata: one writer at a time
        ds = store.dataset(dataset)
        if ds is not None and not _same_types(ds.schema, schema):
            import lance

            return lance.write_dataset(table, store.path(dataset), mode="overwrite").version
        version = store.upsert(dataset, table, schema=schema)
        ds = store.dataset(dataset)
        if (ds.schema.metadata or {}).get(FINGERPRINT_KEY.encode()) != schema.metadata[FINGERPRINT_KEY.encode()]:
            ds.replace_schema_metadata({k.decode(): v.decode() for k, v in schema.metadata.items()})
            version = store.dataset(dataset).version
        return version


def feature_table(
    clip_ids: Sequence[str],
    vectors: np.ndarray,
    tokens: Sequence[np.ndarray] | None,
    schema: pa.Schema,
) -> pa.Table:
    """Rows of a feature set as an Arrow table of ``schema`` (from :func:`feature_schema`).

    Args:
        clip_ids: N clip ids.
        vectors: ``(N, D)`` pooled embeddings (cast to the schema's float type).
        tokens: one ``(T_i, Dt)`` array per clip, or None when the set has no tokens.
        schema: the feature set's schema; its fingerprint is written on every row.

    Returns:
        The table :func:`write_features` upserts (and the Ray engine writes as fragments).
    """
    value_type = schema.field("vector").type.value_type
    np_dtype = np.float16 if value_type == pa.float16() else np.float32
    dim = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np_dtype).reshape(-1))
    columns = {
        "clip_id": pa.array(list(clip_ids), pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
    }
    if tokens is not None:
        token_type = schema.field("tokens").type
        token_dim = token_type.value_type.list_size
        lengths = np.array([len(t) for t in tokens], dtype=np.int32)
        stacked = np.concatenate([np.asarray(t, dtype=np_dtype).reshape(-1, token_dim) for t in tokens])
        inner = pa.FixedSizeListArray.from_arrays(pa.array(stacked.reshape(-1)), token_dim)
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
        columns["tokens"] = pa.ListArray.from_arrays(offsets, inner)
    fingerprint = schema.metadata[FINGERPRINT_KEY.encode()].decode()
    columns["fingerprint"] = pa.array([fingerprint] * len(clip_ids), pa.string())
    return pa.table(columns, schema=schema)


def _same_types(stored: pa.Schema, new: pa.Schema) -> bool:
    return all(
        f.name in stored.names and stored.field(f.name).type == f.type for f in new
    )


def feature_spec(store: Store, name: str) -> dict[str, Any] | None:
    """The spec a feature set was written with (None if the set does not exist)."""
    ds = store.dataset(features_name(name))
    if ds is None:
        return None
    raw = (ds.schema.metadata or {}).get(SPEC_KEY.encode())
    return json.loads(raw) if raw else {}


def up_to_date_clip_ids(store: Store, name: str, fingerprint: str) -> set[str]:
    """Clip ids whose row in ``name`` was written with ``fingerprint``."""
    table = store.table(
        features_name(name), columns=["clip_id"], where=f"fingerprint = {sql_quote(fingerprint)}"
    )
    return set() if table is None else set(table.column("clip_id").to_pylist())


class FeatureMatrix:
    """Vectors of one feature set as a dense array, with the clip ids of its rows.

    Attributes:
        clip_ids: list of N clip ids.
        vectors: ``(N, D)`` float32 array.
        spec: the feature set's spec.
    """

    def __init__(self, clip_ids: list[str], vectors: np.ndarray, spec: dict[str, Any]):
        self.clip_ids = clip_ids
        self.vectors = vectors
        self.spec = spec

    def __len__(self) -> int:
        return len(self.clip_ids)


def read_features(
    store: Store,
    name: str,
    *,
    clip_ids: Sequence[str] | None = None,
    where: str | None = None,
    dtype=np.float32,
) -> FeatureMatrix:
    """Load a feature set's pooled vectors (optionally for some clips) as a dense array.

    ``where`` filters the feature rows (e.g. ``"clip_id IN (...)"``); to filter by clip
    columns, select the clip ids with :meth:`Store.clips` first and pass ``clip_ids``.

    Raises:
        MissingFeatureSetError: the feature set does not exist (says which command builds it).
    """
    dataset = features_name(name)
    ds = store.dataset(dataset)
    if ds is None:
        raise MissingFeatureSetError.of(store, name)
    validate_where(where, ds.schema)  # before it is wrapped in (...): a stray ')' shows
    filters = [where] if where else []
    if clip_ids is not None and len(clip_ids) <= _IN_LIST_LIMIT:
        filters.append(sql_in("clip_id", clip_ids))
    table = store.table(dataset, columns=["clip_id", "vector"],
                        where=" AND ".join(f"({f})" for f in filters) or None)
    if clip_ids is not None and len(clip_ids) > _IN_LIST_LIMIT:
        import pyarrow.compute as pc

        table = table.filter(pc.is_in(table.column("clip_id"), pa.array(list(clip_ids), pa.string())))
    vector = table.column("vector").combine_chunks()
    dim = vector.type.list_size
    flat = vector.values.to_numpy(zero_copy_only=False)
    vectors = flat.reshape(-1, dim).astype(dtype, copy=False)
    return FeatureMatrix(table.column("clip_id").to_pylist(), vectors, feature_spec(store, name) or {})
