"""Building an index from feature sets, or bringing an existing one up to date."""

from __future__ import annotations

import io
import json
import logging
import time
from datetime import datetime, timezone
from typing import Any

from ..errors import IndexCorruptError, InputError
from ..schema import CLIPS
from ..store import Store
from .config import IndexBuildReport, IndexConfig
from .drift import index_drift
from .files import checksum, forget_index, index_paths, read_manifest, seal_manifest, write_files
from .layout import save_layout
from .kinds import add_vectors, auto_kind, new_index, train_index, tune_search
from .load import LoadedIndex, load_index
from .vectors import (
    aligned_parts,
    clip_groups,
    common_clip_ids,
    current_clip_ids,
    feature_state,
    feature_stats,
    fuse_by_group,
    fused_matrix,
    group_digest,
    group_spec,
)

log = logging.getLogger(__name__)

__all__ = ["FORMAT_VERSION", "build_index"]

#: Version of the files' layout; an index of another version is rebuilt, never added to.
FORMAT_VERSION = 1


def build_index(store: Store, config: IndexConfig, *, progress: bool = True) -> IndexBuildReport:
    """Build index ``config.name``, or bring an existing one up to date.

    An existing index with the same encoders, weights, kind and feature-set fingerprints
    only gets the rows extracted since it was built (``flat``, ``ivf`` and ``hnsw`` all
    support adding). A changed fingerprint, weights, kind, or clips removed from a feature
    set trigger a full rebuild, and the report says why.

    An index whose files do not match their manifest (checksums, row counts) or cannot be
    read is rebuilt, never added to.

    With ``config.normalize`` (a clip column such as ``speaker``) each group's vectors
    are z-scored with that group's own statistics (kept in the manifest for queries); new
    clips, or changed group values, change those statistics, so they rebuild the index.

    Raises:
        MissingFeatureSetError: a feature set is missing (names the extract command).
        InputError: bad config, or no clip has all the encoders' features.
        StoreError: the store is not writable (before any vector is read).
    """
    start = time.perf_counter()
    store.check_writable()
    states = {enc: feature_state(store, enc) for enc in config.encoders}
    dims = {enc: s["dim"] for enc, s in states.items()}
    fingerprints = {enc: s["fingerprint"] for enc, s in states.items()}
    skipped = _stale_rows(store, states)
    if config.normalize:
        clip_groups(store, config.normalize, [])  # the column exists, before any vector is read

    existing = None
    reason = ""
    nonfinite: dict[str, int] = {}  # NaN/inf rows left out, per encoder
    if not config.rebuild:
        try:
            has_manifest = read_manifest(store, config.name) is not None
        except IndexCorruptError as exc:
            has_manifest, reason = False, f"the old manifest is unreadable: {_why(exc)}"
        if has_manifest:
            existing, reason = _incremental_candidate(store, config, states)

    if existing is not None:
        loaded = existing
        current = set(common_clip_ids(store, config.encoders, fingerprints))
        indexed = set(loaded.clip_ids)
        removed = indexed - current
        fresh = current - indexed
        if fresh and not removed:  # NaN/inf rows never count as new (nor rebuild a normalised index)
            fresh = set(aligned_parts(store, config.encoders, clip_ids=sorted(fresh),
                                      fingerprints=fingerprints, nonfinite=nonfinite)[0])
        if removed:
            reason = f"{len(removed)} indexed clips no longer have current features"
        elif config.normalize and fresh:
            reason = (f"{len(fresh)} new clips change their groups' statistics "
                      f"(--normalize {config.normalize})")
        elif config.normalize and group_digest(loaded.clip_ids, clip_groups(
                store, config.normalize, loaded.clip_ids)) != loaded.manifest["normalize"].get("digest"):
            reason = f"the clips' {config.normalize} values changed"
        else:
            new_ids = sorted(fresh)
            params = dict(loaded.manifest["params"])
            if new_ids:
                got_ids, vectors, _ = fused_matrix(
                    store, config.encoders, config.weights, clip_ids=new_ids,
                    fingerprints=fingerprints, stats=loaded.manifest.get("standardize"))
                add_vectors(loaded.index, vectors, f"index {config.name}: adding", progress)
            else:
                got_ids = []
            ids = loaded.clip_ids + got_ids
            manifest = _manifest(config, loaded.kind, params, states, ids, loaded.dim, store,
                                 loaded.manifest.get("built_at"), loaded.manifest.get("standardize"),
                                 loaded.manifest.get("normalize"))
            if got_ids or manifest["feature_sets"] != loaded.manifest.get("feature_sets"):
                sealed = _save(store, config.name, loaded.index, ids, manifest)
                save_layout(store, config.name, ids, sealed["checksums"]["manifest"], index=loaded.index)
            return IndexBuildReport(
                config.name, loaded.kind, "added" if got_ids else "unchanged", len(ids),
                len(got_ids), loaded.dim, time.perf_counter() - start, params, "", skipped,
                _summary(loaded.manifest.get("normalize")), nonfinite)

    normalize = None
    nonfinite.clear()
    if config.normalize:
        ids, vectors, stats, normalize = _group_normalised(store, config, fingerprints, nonfinite)
    else:
        ids, vectors, stats = fused_matrix(store, config.encoders, config.weights,
                                           fingerprints=fingerprints, nonfinite=nonfinite,
                                           stats="compute" if config.standardize else None)
    if not ids:
        bad = f" (left out {sum(nonfinite.values())} rows holding NaN or inf: `emofs check --repair` " \
              "quarantines them)" if nonfinite else ""
        raise InputError(
            f"no clip has current features for all of {', '.join(config.encoders)}{bad}: run "
            f"`emofs extract --encoders {','.join(config.encoders)}` first"
        )
    dim = int(sum(dims.values()))
    assert vectors.shape == (len(ids), dim), (vectors.shape, len(ids), dim)  # (N, sum D_i)
    kind = auto_kind(len(ids)) if config.kind == "auto" else config.kind
    params: dict[str, Any] = {"requested_kind": config.kind, "recall_target": config.recall}
    index = new_index(kind, dim, len(ids), config, params)
    train_index(index, kind, vectors, f"index {config.name}")
    add_vectors(index, vectors, f"index {config.name}: {kind}", progress)
    tune_search(index, kind, vectors, config.recall, params)
    manifest = _manifest(config, kind, params, states, ids, dim, store, None, stats, normalize)
    sealed = _save(store, config.name, index, ids, manifest)
    save_layout(store, config.name, ids, sealed["checksums"]["manifest"], vectors=vectors)  # the map
    mode = "rebuilt" if reason else "created"
    return IndexBuildReport(config.name, kind, mode, len(ids), len(ids), dim,
                            time.perf_counter() - start, params, reason, skipped, _summary(normalize),
                            nonfinite)


def _group_normalised(store: Store, config: IndexConfig, fingerprints: dict[str, Any],
                      nonfinite: dict[str, int]):
    """``(ids, vectors (N, sum D_i), stats, normalize)`` with each group z-scored on its own."""
    ids, parts = aligned_parts(store, config.encoders, fingerprints=fingerprints, nonfinite=nonfinite)
    if not ids:
        return ids, None, None, None
    groups = clip_groups(store, config.normalize, ids)
    stats = feature_stats(parts)  # all indexed rows: the fallback of small / unknown groups
    normalize = group_spec(parts, groups, config.normalize, config.min_group_clips)
    normalize["digest"] = group_digest(ids, groups)
    fell_back = normalize["fallback_groups"]
    if fell_back:
        log.warning(f"--normalize {config.normalize}: {len(fell_back)} group(s) with fewer than "
                    f"{config.min_group_clips} clips (or no {config.normalize}) use the indexed rows' "
                    "statistics: " + ", ".join(f"{g} ({c})" for g, c in list(fell_back.items())[:10]))
    return ids, fuse_by_group(parts, config.weights, groups, stats, normalize), stats, normalize


def _summary(normalize: dict[str, Any] | None) -> dict[str, Any] | None:
    if not normalize:
        return None
    return {"column": normalize["column"], "groups": len(normalize["groups"]),
            "fallback_groups": normalize["fallback_groups"]}


def _manifest(config: IndexConfig, kind: str, params: dict[str, Any], states: dict[str, Any],
              ids: list[str], dim: int, store: Store, built_at: str | None,
              stats: list[dict[str, list[float]]] | None,
              normalize: dict[str, Any] | None = None) -> dict[str, Any]:
    import faiss

    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {
        "format": FORMAT_VERSION,
        "name": config.name,
        "kind": kind,
        "metric": "cosine",
        "params": params,
        "encoders": list(config.encoders),
        "weights": list(config.weights),
        "fused": len(config.encoders) > 1,
        "feature_sets": {e: {"fingerprint": s["fingerprint"], "version": s["version"],
                             "stamp": s.get("stamp"), "dim": s["dim"]} for e, s in states.items()},
        "dim": dim,
        "rows": len(ids),
        "store_version": store.version(CLIPS),
        "built_at": built_at or now,
        "updated_at": now,
        "faiss_version": faiss.__version__,
        "files": {k: v.split("/", 1)[1] for k, v in index_paths(config.name).items()},
        # Per-encoder z-score applied to indexed rows and queries (None: plain cosine).
        "standardize": stats,
        # Per-group z-scores (--normalize COLUMN): each group's per-encoder mean / std;
        # small / unknown groups use "standardize". None: off.
        "normalize": normalize,
    }


def _save(store: Store, name: str, index, ids: list[str], manifest: dict[str, Any]) -> dict[str, Any]:
    """Write the three files, the manifest last with the sha256 of the other two and of
    its own content (:func:`~.files.seal_manifest`).

    Under the store's write lock: a reader that finds files of two builds (a save in
    flight) waits for the lock and reads again (:func:`load_index`).
    """
    import faiss
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = index_paths(name)
    raw = faiss.serialize_index(index).tobytes()
    sink = io.BytesIO()
    pq.write_table(pa.table({"clip_id": pa.array(ids, pa.string())}), sink)
    raw_ids = sink.getvalue()
    manifest = seal_manifest({**manifest, "checksums": {"faiss": checksum(raw), "ids": checksum(raw_ids)}})
    with store.writing():
        # All three written as temporaries first: a full disk leaves the old index whole.
        write_files(store, {paths["faiss"]: raw, paths["ids"]: raw_ids,
                            paths["manifest"]: json.dumps(manifest, indent=2).encode()})
        forget_index(store, name)
    return manifest


def _why(exc: Exception) -> str:
    """An IndexCorruptError's reason without its "rebuild with ..." advice."""
    return str(exc).split(": rebuild")[0]


def _stale_rows(store: Store, states: dict[str, Any]) -> dict[str, int]:
    """Rows per encoder still written with an older spec (left out of the index)."""
    skipped = {}
    for enc, state in states.items():
        if not state["fingerprint"]:
            continue
        current = len(current_clip_ids(store, enc, state["fingerprint"]))
        if current < state["rows"]:
            skipped[enc] = state["rows"] - current
            log.warning(f"{state['rows'] - current} rows of {enc!r} have an older spec and are left "
                        f"out of the index: run `emofs extract --encoders {enc}` to refresh them")
    return skipped


def _incremental_candidate(store: Store, config: IndexConfig,
                           states: dict[str, Any]) -> tuple[LoadedIndex | None, str]:
    """The existing index if rows can be added to it, else ``(None, why it is rebuilt)``."""
    manifest = read_manifest(store, config.name)
    if manifest.get("encoders") != list(config.encoders):
        return None, f"encoders changed ({','.join(manifest.get('encoders', []))} -> " \
                     f"{','.join(config.encoders)})"
    if [float(w) for w in manifest.get("weights", [])] != list(config.weights):
        return None, "weights changed"
    if config.kind != "auto" and config.kind != manifest.get("kind"):
        return None, f"kind changed ({manifest.get('kind')} -> {config.kind})"
    if manifest.get("format") != FORMAT_VERSION:
        return None, "index format changed"
    if not manifest.get("checksums"):  # its bytes cannot be vouched for: never bless them
        return None, "it has no checksums yet (built by an older emofs)"
    before = (manifest.get("normalize") or {}).get("column")
    if before != config.normalize:
        return None, f"group normalisation changed (--normalize {before or 'none'} -> {config.normalize or 'none'})"
    if (manifest.get("standardize") is not None) != config.standardize:
        return None, "standardisation " + ("switched on" if config.standardize else "switched off")
    for enc, state in states.items():
        before = manifest.get("feature_sets", {}).get(enc, {})
        if before.get("fingerprint") != state["fingerprint"] or before.get("dim") != state["dim"]:
            return None, f"the spec of {enc!r} changed (fingerprint " \
                         f"{before.get('fingerprint')} -> {state['fingerprint']})"
    try:
        loaded = load_index(store, config.name, use_cache=False)
    except IndexCorruptError as exc:
        return None, f"the old index is damaged: {_why(exc)}"
    drift = index_drift(store, loaded)
    if drift:
        return None, f"the old index {drift.split(': rebuild')[0]}"
    return loaded, ""
