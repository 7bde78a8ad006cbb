"""NaN and inf in feature sets: refused at the door, found and quarantined afterwards.

A single non-finite vector poisons everything downstream: an index standardised over it
holds NaN everywhere (every ``similar`` fails), a head trained on it has a NaN loss. So:

- writers (``emofs extract`` on either engine, ``emofs import features``, ``emofs embed``)
  refuse such rows into ``errors.lance`` and write the rest; :func:`finite_rows` is the
  test, made in the storage dtype (a float32 value past 65504 is inf in a float16 set);
- ``emofs check`` finds rows already stored (:func:`nonfinite_clip_ids`, written by an
  older emofs or another tool) and ``--repair`` quarantines them
  (:func:`quarantine_nonfinite`): the rows leave the feature set and each clip gets an
  errors row saying so, so the next ``emofs extract`` redoes them;
- ``emofs index build`` and training leave out or name what is left.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from .schema import CLIPS, features_name
from .store import Store, sql_in

__all__ = ["NONFINITE_MESSAGE", "finite_rows", "nonfinite_clip_ids", "quarantine_nonfinite",
           "find_nonfinite", "repair_nonfinite", "nonfinite_lines", "nonfinite_summary"]

log = logging.getLogger(__name__)

#: The errors-row message of a refused row (``emofs errors --where "message LIKE '%NaN%'"``).
NONFINITE_MESSAGE = "vector holds NaN or inf"
#: Rows read at a time when scanning a feature set.
_SCAN_ROWS = 8192
#: ``emofs check`` scans a feature set's tokens when they take at most this much disk
#: (reading them costs about a second a GiB); vectors are always scanned.
TOKEN_SCAN_BYTES = 2 << 30
_EXAMPLES = 5


def finite_rows(vectors: np.ndarray, tokens: Sequence[np.ndarray | None] | None = None,
                dtype: Any = None) -> np.ndarray:
    """Which rows hold only finite values once stored.

    Args:
        vectors: ``(N, D)`` pooled vectors.
        tokens: optional one ``(T_i, Dt)`` array (or None) per row.
        dtype: the storage dtype (``"float16"``, ``np.float16``, ...); values beyond its
            range count as infinite. None: as given.

    Returns:
        ``(N,)`` bool.
    """
    np_dtype = None if dtype is None else np.dtype(dtype)

    def ok(array) -> np.ndarray:  # (N, ...) -> (N,)
        array = np.asarray(array)
        if np_dtype is not None and array.dtype != np_dtype and np.issubdtype(array.dtype, np.floating):
            with np.errstate(over="ignore"):
                array = array.astype(np_dtype)
        return np.isfinite(array.reshape(len(array), -1)).all(axis=1)

    vectors = np.asarray(vectors)
    good = ok(vectors) if len(vectors) else np.zeros(0, bool)
    if tokens is not None:
        for i, t in enumerate(tokens):
            if good[i] and t is not None and np.size(t) and not ok(np.asarray(t).reshape(1, -1))[0]:
                good[i] = False
    return good


def find_nonfinite(store: Store) -> dict[str, dict[str, Any]]:
    """Feature sets holding NaN/inf rows (``emofs check``).

    Returns:
        ``{feature set: {"rows": n, "examples": [clip ids], "clip_ids": [...],
        "tokens_checked": bool}}``, only for sets with such rows.
    """
    found = {}
    for name in store.feature_sets():
        scan_tokens = _token_bytes(store, name) <= TOKEN_SCAN_BYTES
        bad = nonfinite_clip_ids(store, name, tokens=scan_tokens)
        if bad:
            found[name] = {"rows": len(bad), "examples": bad[:_EXAMPLES], "clip_ids": bad,
                           "tokens_checked": scan_tokens}
    return found


def nonfinite_lines(found: dict[str, dict[str, Any]]) -> list[str]:
    """One problem line per feature set of :func:`find_nonfinite`."""
    return [f"features/{name}.lance: {bad['rows']} rows hold NaN or inf (e.g. "
            f"{', '.join(map(str, bad['examples']))}): they break `emofs index build` and training; "
            f"run `emofs check --repair` to quarantine them, then `emofs extract --encoders {name}`"
            for name, bad in found.items()]


def nonfinite_summary(found: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """:func:`find_nonfinite` without the full id lists (``emofs check --json``)."""
    return {name: {k: v for k, v in bad.items() if k != "clip_ids"} for name, bad in found.items()}


def repair_nonfinite(store: Store, found: dict[str, dict[str, Any]]) -> dict[str, int]:
    """:func:`quarantine_nonfinite` for every set of :func:`find_nonfinite`; rows removed per set."""
    return {name: quarantine_nonfinite(store, name, bad["clip_ids"]) for name, bad in found.items()}


def _token_bytes(store: Store, name: str) -> int:
    """Bytes the ``tokens`` column takes on disk (0: none; unknown: 0, so it is scanned)."""
    ds = store.dataset(features_name(name))
    if ds is None or "tokens" not in ds.schema.names:
        return 0
    try:
        ids = sorted(f.id() for f in ds.lance_schema.fields())
        first = ds.lance_schema.field("tokens").id()
        after = next((i for i in ids if i > first), float("inf"))
        return sum(f.bytes_on_disk for f in ds.stats.data_stats().fields if first <= f.id < after)
    except Exception:  # noqa: BLE001 - an older Lance without these statistics: scan them
        return 0


def nonfinite_clip_ids(store: Store, name: str, *, tokens: bool = True) -> list[str]:
    """Clip ids of the rows of feature set ``name`` whose vector (or tokens) hold NaN/inf.

    Reads the set in batches of :data:`_SCAN_ROWS` rows (vector and tokens columns only).
    """
    ds = store.dataset(features_name(name))
    if ds is None or "vector" not in ds.schema.names:
        return []
    columns = ["clip_id", "vector"] + (["tokens"] if tokens and "tokens" in ds.schema.names else [])
    bad: list[str] = []
    for batch in ds.to_batches(columns=columns, batch_size=_SCAN_ROWS):
        if batch.num_rows == 0:
            continue
        vector = batch.column("vector")
        dim = vector.type.list_size
        flat = vector.flatten().to_numpy(zero_copy_only=False)
        if len(flat) != batch.num_rows * dim:  # null vectors: treat as missing, not bad
            valid = vector.is_valid().to_numpy(zero_copy_only=False)
            good = np.ones(batch.num_rows, bool)
            good[valid] = np.isfinite(flat.reshape(-1, dim)).all(axis=1)
        else:
            good = np.isfinite(flat.reshape(-1, dim)).all(axis=1)  # (N,)
        if "tokens" in columns:
            good &= _finite_lists(batch.column("tokens"))
        if not good.all():
            ids = batch.column("clip_id").to_numpy(zero_copy_only=False)
            bad.extend(str(c) for c in ids[~good])
    return bad


def _finite_lists(tokens: pa.Array) -> np.ndarray:
    """``(N,)`` bool: every value of each row's token list is finite (null lists are)."""
    if tokens.null_count == len(tokens):
        return np.ones(len(tokens), bool)
    values = tokens.flatten().flatten().to_numpy(zero_copy_only=False)  # all token values
    token_dim = tokens.type.value_type.list_size
    offsets = tokens.offsets.to_numpy(zero_copy_only=False).astype(np.int64) * token_dim
    offsets -= offsets[0]
    bad_values = ~np.isfinite(values)
    if not bad_values.any():
        return np.ones(len(tokens), bool)
    counts = np.add.reduceat(np.append(bad_values, False).astype(np.int64), offsets[:-1]) \
        if len(offsets) > 1 else np.zeros(0, np.int64)
    empty = offsets[1:] == offsets[:-1]  # reduceat gives the next value for empty rows
    counts[empty] = 0
    return counts == 0


def quarantine_nonfinite(store: Store, name: str, clip_ids: Sequence[str]) -> int:
    """Delete ``clip_ids``'s rows from feature set ``name`` and record one errors row each.

    The errors row (stage ``encode`` for an extracted set, ``import`` for an imported one)
    says the row was quarantined and what redoes it; with the row gone, the next
    ``emofs extract --encoders NAME`` re-extracts the clip. Call under the write lock.

    Returns:
        Rows deleted.
    """
    clip_ids = list(dict.fromkeys(clip_ids))
    if not clip_ids:
        return 0
    from .features import feature_spec

    spec = feature_spec(store, name) or {}
    imported = spec.get("source") == "import"
    uris = _uris(store, clip_ids)
    ds = store.dataset(features_name(name))
    before = ds.count_rows()
    for start in range(0, len(clip_ids), 500):
        ds.delete(sql_in("clip_id", clip_ids[start:start + 500]))
    removed = before - store.dataset(features_name(name)).count_rows()
    fix = (f"import the clip's file again (`emofs import features`)" if imported
           else f"`emofs extract --encoders {name}` redoes it")
    now = datetime.now(timezone.utc)
    store.record_errors(
        {"clip_id": c, "uri": uris.get(c) or c, "stage": "import" if imported else "encode",
         "encoder": name, "at": now,
         "message": f"{NONFINITE_MESSAGE}: removed from feature set {name!r} by `emofs check "
                    f"--repair`; {fix}"}
        for c in clip_ids)
    log.debug("%s: quarantined %d rows holding NaN or inf", name, removed)
    return removed


def _uris(store: Store, clip_ids: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for start in range(0, len(clip_ids), 500):
        table = store.table(CLIPS, columns=["clip_id", "uri"],
                            where=sql_in("clip_id", clip_ids[start:start + 500]))
        if table is not None:
            out.update(zip(table.column("clip_id").to_pylist(), table.column("uri").to_pylist()))
    return out
