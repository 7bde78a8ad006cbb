"""The store's indexes: list, drop, pick one to query, staleness, the build command text."""

from __future__ import annotations

import json
from typing import Any

from ..errors import IndexCorruptError, IndexNotFoundError, StoreError
from ..schema import INDEX_DIR, features_name
from ..store import Store
from ..versioned import dataset_version, manifest_stamp
from .files import (
    check_index_name,
    delete_file,
    forget_index,
    index_paths,
    read_bytes,
    read_manifest,
)
from .vectors import common_clip_ids, feature_state

__all__ = [
    "build_command",
    "list_indexes",
    "drop_index",
    "resolve_index_name",
    "indexes_by_recency",
    "index_staleness",
    "at_built_version",
]


def build_command(manifest: dict[str, Any]) -> str:
    """The ``emofs index build ...`` command that (re)builds the index of ``manifest``.

    Args:
        manifest: an index manifest (``encoders``, ``weights``, ``name``).

    Returns:
        The command line, e.g. ``emofs index build --fused a,b --weights 1,0.5``.
    """
    encoders = manifest.get("encoders") or ["ENCODER"]
    name = manifest.get("name", "")
    if len(encoders) == 1:
        cmd = f"emofs index build --encoder {encoders[0]}"
    else:
        weights = ",".join(f"{w:g}" for w in manifest.get("weights", []))
        cmd = f"emofs index build --fused {','.join(encoders)} --weights {weights}"
    if name and name != "+".join(encoders):
        cmd += f" --name {name}"
    group_column = (manifest.get("normalize") or {}).get("column")
    if group_column:
        cmd += f" --normalize {group_column}"
    return cmd


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
        InputError: an invalid index name.
    """
    check_index_name(name)
    with store.writing():  # never between the writes of a save in flight
        removed = [store.path(rel) for rel in index_paths(name).values() if delete_file(store, rel)]
        if removed:
            delete_file(store, f"{INDEX_DIR}/{name}.layout.arrow")  # its map (layout.py)
    if not removed:
        available = ", ".join(store.index_names()) or "none"
        raise IndexNotFoundError(f"no index {name!r} in {store.uri} (available: {available}): "
                                 "see `emofs index list`")
    forget_index(store, name)
    return removed


def resolve_index_name(store: Store, name: str | None) -> tuple[str, str | None]:
    """The index to query: ``name``, the only one, or the most recently built.

    Returns:
        ``(name, note)`` where ``note`` says how it was chosen (None when given).

    Raises:
        IndexNotFoundError: the store has no index (names the build command).
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
    chosen = indexes_by_recency(store)[0]
    return chosen, f"using index {chosen!r}, the most recently built of {len(names)} " \
                   f"({', '.join(names)}); pick one with --index"


def indexes_by_recency(store: Store) -> list[str]:
    """The store's index names, the most recently built (or updated) first."""
    stamps = []
    for n in store.index_names():
        try:
            manifest = read_manifest(store, n) or {}
        except IndexCorruptError:
            manifest = {}
        stamps.append((manifest.get("updated_at") or manifest.get("built_at") or "", n))
    return [n for _, n in sorted(stamps, reverse=True)]


def at_built_version(store: Store, encoder: str, built: dict[str, Any]) -> bool:
    """Whether feature set ``encoder`` is still the dataset version an index was built from
    (``built``: its entry in the index manifest), without opening Lance on a local store.

    The version number alone is not enough: a feature set removed and extracted again
    restarts its versions. A local store compares the manifest's stamp too (indexes built
    before stamps were kept: the version alone); an object store, the version alone.
    """
    if built.get("version") is None or dataset_version(store, features_name(encoder)) != built["version"]:
        return False
    if built.get("stamp") is None:
        return True
    return manifest_stamp(store, features_name(encoder), built["version"]) == built["stamp"]


def index_staleness(store: Store, manifest: dict[str, Any]) -> list[str]:
    """Why an index is behind its feature sets (empty list when it is current).

    Cheap when nothing changed (compares dataset versions); otherwise counts the clips
    extracted since the build.
    """
    reasons = []
    changed = []
    for enc, before in manifest.get("feature_sets", {}).items():
        if at_built_version(store, enc, before):
            continue  # the very version built from: same rows, same spec
        try:
            state = feature_state(store, enc)
        except StoreError:
            reasons.append(f"feature set {enc!r} is gone")
            continue
        if state["fingerprint"] != before.get("fingerprint"):
            reasons.append(f"the spec of {enc!r} changed since the build (full rebuild needed)")
        else:  # a newer version, or the set extracted afresh: which clips came or went
            changed.append(enc)
    if changed and not reasons:
        fingerprints = {e: s.get("fingerprint") for e, s in manifest["feature_sets"].items()}
        current = set(common_clip_ids(store, manifest["encoders"], fingerprints))
        ids_raw = read_bytes(store, index_paths(manifest["name"])["ids"])
        if ids_raw is not None:
            import pyarrow.parquet as pq

            import pyarrow as pa

            # BufferReader, not io.BytesIO: Arrow's threads never wait for the GIL (load.py)
            indexed = set(pq.ParquetFile(pa.BufferReader(ids_raw)).read(columns=["clip_id"]).column("clip_id").to_pylist())
            new = len(current - indexed)
            gone = len(indexed - current)
            if new:
                reasons.append(f"{new} clips extracted since the build are not in it")
            if gone:
                reasons.append(f"{gone} indexed clips no longer have current features")
    return reasons
