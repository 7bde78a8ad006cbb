"""`emofs info`: what a store holds, as one JSON-friendly dict."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from .errors import IndexCorruptError
from .schema import CLIPS, ERRORS, SCHEMA_VERSION, features_name
from .store import Store

__all__ = ["store_info", "feature_set_info", "SPEC_KEY", "FINGERPRINT_KEY"]

#: Schema-metadata keys where a feature set describes itself.
SPEC_KEY = "emofs.spec"
FINGERPRINT_KEY = "emofs.fingerprint"


def feature_set_info(store: Store, name: str) -> dict[str, Any]:
    """Rows, dim, dtype, spec and version of ``features/<name>.lance``."""
    import pyarrow as pa

    ds = store.dataset(features_name(name))
    meta = {k.decode(): v.decode() for k, v in (ds.schema.metadata or {}).items()}
    vector = ds.schema.field("vector").type if "vector" in ds.schema.names else None
    dim = vector.list_size if isinstance(vector, pa.FixedSizeListType) else None
    dtype = str(vector.value_type) if vector is not None else None
    spec = json.loads(meta[SPEC_KEY]) if SPEC_KEY in meta else None
    return {
        "rows": ds.count_rows(),
        "dim": dim,
        "dtype": {"halffloat": "float16", "float": "float32"}.get(dtype, dtype),
        "has_tokens": "tokens" in ds.schema.names,
        "fingerprint": meta.get(FINGERPRINT_KEY),
        "spec": spec,
        "version": ds.version,
    }


def store_info(store: Store) -> dict[str, Any]:
    """Everything ``emofs info`` shows: counts by modality and label, feature sets,
    indexes, prediction runs, errors, versions and size on disk."""
    total, by_modality, by_label = _clip_counts(store)
    modalities = {"audio": 0, "video": 0, "audio+video": 0, "none": 0}
    for value, count in by_modality.items():
        modalities[value or "none"] = count
    ranked = sorted(by_label.items(), key=lambda kv: (-kv[1], kv[0] is None, kv[0] or ""))
    labels = {(value if value is not None else "<none>"): count for value, count in ranked}
    errors = store.errors()
    by_stage = dict(errors.group_by("stage").len().iter_rows()) if errors.height else {}
    features = {name: feature_set_info(store, name) for name in store.feature_sets()}
    indexes = {}
    from .index.files import read_manifest  # the index package reads features, which need this module

    for name in store.index_names():
        try:
            manifest = read_manifest(store, name) or {}
        except IndexCorruptError as exc:
            manifest = {"problem": str(exc)}
        # The per-dimension standardisation stats are for queries, not for reading.
        manifest["standardize"] = manifest.get("standardize") is not None
        indexes[name] = manifest
    versions = {CLIPS: store.version(CLIPS), ERRORS: store.version(ERRORS)}
    versions.update({features_name(n): f["version"] for n, f in features.items()})
    return {
        "store": store.uri,
        "schema_version": SCHEMA_VERSION,
        "version": store.version(CLIPS),
        "versions": versions,
        "clips": total,
        "modalities": modalities,
        "labels": labels,
        "features": features,
        "indexes": indexes,
        "predictions": store.prediction_runs(),
        "errors": errors.height,
        "errors_by_stage": by_stage,
        "size_bytes": store.size_bytes(),
    }


def _clip_counts(store: Store) -> tuple[int, Counter, Counter]:
    """``(clips, {modality: clips}, {label: clips})`` counted batch by batch from the two
    columns: a million clips never sit in memory as one table (a server would keep the
    freed pages)."""
    import pyarrow.compute as pc

    modalities: Counter = Counter()
    labels: Counter = Counter()
    ds = store.dataset(CLIPS)
    if ds is None:
        return 0, modalities, labels
    for batch in ds.to_batches(columns=["modality", "label"], batch_size=65536):
        for column, counts in ((batch.column(0), modalities), (batch.column(1), labels)):
            for pair in pc.value_counts(column).to_pylist():  # a handful of distinct values
                counts[pair["values"]] += pair["counts"]
    return ds.count_rows(), modalities, labels
