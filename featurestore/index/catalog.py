"""The store's indexes: list, drop, pick one to query, staleness, the build command text."""

from __future__ import annotations

import json
import os
from typing import Any

from ..errors import IndexCorruptError, IndexNotFoundError, StoreError
from ..manifests import newest_manifest, newest_of
from ..schema import INDEX_DIR, features_name
from ..store import Store
from ..versioned import dataset_version, manifest_stamp
from .files import (
    FileMemo,
    check_index_name,
    delete_file,
    folder_names,
    forget_index,
    index_paths,
    read_bytes,
    read_manifest,
    shared_manifest,
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
    "index_names",
    "latest_version",
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
    names = index_names(store)
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


def index_names(store: Store) -> list[str]:
    """:meth:`Store.index_names`; on a local store from a listing kept until the index
    folder changes (:func:`~.files.folder_names`: a search asks every time)."""
    if not store.is_local:
        return store.index_names()
    names = folder_names(store.path(INDEX_DIR))
    return sorted(n[: -len(".faiss")] for n in names or [] if n.endswith(".faiss"))


def latest_version(store: Store, name: str) -> int | None:
    """:func:`~featurestore.versioned.dataset_version` of dataset ``name``; on a local store
    from a listing of its ``_versions`` kept until that folder changes (one ``stat``)."""
    if not store.is_local:
        return dataset_version(store, name)
    newest = _newest(store.path(name))
    return None if newest is None else newest[0]


def indexes_by_recency(store: Store) -> list[str]:
    """The store's index names, the most recently built (or updated) first."""
    stamps = []
    for n in index_names(store):
        try:
            manifest = shared_manifest(store, n) or {}
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
    if built.get("version") is None:
        return False
    if store.is_local and built.get("stamp") is not None:
        return _local_stamp(store, features_name(encoder), built["version"]) == built["stamp"]
    if dataset_version(store, features_name(encoder)) != built["version"]:
        return False
    if built.get("stamp") is None:
        return True
    return manifest_stamp(store, features_name(encoder), built["version"]) == built["stamp"]


#: local manifest file -> its manifest_stamp, per version of the file: a search checks its
#: index against the feature sets with one listing and one stat, not a read and a hash.
_STAMPS = FileMemo()


def _local_stamp(store: Store, name: str, version: int) -> str | None:
    """:func:`~featurestore.versioned.manifest_stamp` of ``version`` of local dataset ``name``
    when it is the newest (else None), remembered per manifest file (Lance never rewrites
    one; a dataset written afresh has new files)."""
    newest = _newest(store.path(name))
    if newest is None or newest[0] != version:
        return None
    path = os.path.join(store.path(name), "_versions", newest[1])
    return _STAMPS.get(path, lambda: manifest_stamp(store, name, version))


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


#: dataset -> (the listing parsed, its newest manifest).
_NEWEST: dict[str, tuple[list[str], tuple[int, str] | None]] = {}


def _newest(dataset: str) -> tuple[int, str] | None:
    """:func:`~featurestore.manifests.newest_manifest` from a listing kept until the
    ``_versions`` folder changes (:func:`~.files.folder_names`)."""
    names = folder_names(os.path.join(dataset, "_versions"))
    if names is None:
        return newest_manifest(dataset)  # no folder: as the store's own reader says
    known = _NEWEST.get(dataset)
    if known is not None and known[0] is names:  # the same kept listing: parsed already
        return known[1]
    newest = newest_of(names)
    _NEWEST[dataset] = (names, newest)
    return newest
