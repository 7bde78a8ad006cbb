"""Two-phase writes: workers write Lance fragments, one driver commits them atomically.

Distributed jobs (the Ray engine) cannot ``merge_insert`` from every worker: concurrent
upserts of one dataset conflict, and one writer per row is slow. Instead each worker
writes its rows as *uncommitted* fragment files (:func:`write_fragments`) and returns their
metadata (JSON); the driver later makes them visible in one commit
(:func:`commit_fragments`).

That commit is an upsert by ``clip_id``: in the same Lance transaction
(``LanceOperation.Update``) the new fragments are added and every older row with one of
their keys gets a deletion-vector entry. A job killed before the commit leaves only
unreferenced files (no row is visible twice or lost); a job killed after it has finished
that chunk. Either way a rerun that plans from the committed state never duplicates a key.
The driver's read of the stored keys and its commit hold the store's write lock
(:meth:`Store.writing`), so another emofs process writing the same dataset waits.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import pyarrow as pa

from .errors import StoreError
from .store import Store, sql_in

__all__ = ["prepare_dataset", "write_fragments", "commit_fragments", "fragments_from_json",
           "duplicate_keys"]


def prepare_dataset(store: Store, name: str, schema: pa.Schema) -> int:
    """Make sure ``name`` exists with ``schema``'s column types before workers write to it.

    Workers' fragment files land inside the dataset directory; creating the (empty)
    dataset first means a job killed before its first commit leaves a valid dataset, never
    a directory Lance cannot open. A dataset whose column types differ (another dim or
    dtype) starts a new, empty version, as :func:`featurestore.features.write_features`
    does; older versions stay readable through Lance's version history.

    Returns:
        The dataset version.
    """
    import lance

    with store.writing():
        ds = store.dataset(name)
        if ds is not None and _same_types(ds.schema, schema):
            return ds.version
        mode = "create" if ds is None else "overwrite"
        return lance.write_dataset(schema.empty_table(), store.path(name), schema=schema,
                                   mode=mode).version

def write_fragments(uri: str, table: pa.Table, schema: pa.Schema) -> list[str]:
    """Write ``table`` as uncommitted fragment(s) of the dataset at ``uri`` (worker side).

    Args:
        uri: dataset URI (``<store>/features/hubert.lance``; local path or object store).
        table: rows to add (cast to ``schema``).
        schema: the dataset schema the rows follow.

    Returns:
        One JSON string per fragment written, for :func:`commit_fragments`.
    """
    from lance.fragment import write_fragments as lance_write_fragments

    if table.schema != schema:
        table = table.cast(schema)
    fragments = lance_write_fragments(table, uri, schema=schema, mode="append")
    return [json.dumps(f.to_json()) for f in fragments]


def fragments_from_json(items: Sequence[str]) -> list:
    """Turn :func:`write_fragments` output back into ``FragmentMetadata`` objects."""
    from lance.fragment import FragmentMetadata

    return [FragmentMetadata.from_json(s) for s in items]


def _same_types(stored: pa.Schema, new: pa.Schema) -> bool:
    return list(stored.names) == list(new.names) and all(
        stored.field(f.name).type == f.type for f in new
    )


def commit_fragments(
    store: Store,
    name: str,
    fragments: Sequence[str],
    keys: Sequence[str],
    schema: pa.Schema,
    *,
    key: str = "clip_id",
) -> int:
    """Make worker-written fragments visible as an upsert by ``key`` (driver side).

    Args:
        store: the store.
        name: dataset path inside the store (``features/hubert.lance``).
        fragments: JSON strings returned by :func:`write_fragments`.
        keys: every key value the fragments hold (older rows with these keys are deleted
            in the same commit).
        schema: the schema the fragments were written with; its metadata (spec,
            fingerprint) becomes the dataset's.
        key: the key column.

    Returns:
        The dataset version after the commit.

    Raises:
        StoreError: the dataset is missing (call :func:`prepare_dataset` first) or has
            other columns than ``schema``.
    """
    import lance

    uri = store.path(name)
    metas = fragments_from_json(fragments)
    with store.writing():  # the keys read below must still be the stored ones at the commit
        ds = store.dataset(name)
        if ds is None:
            raise StoreError(f"{uri} does not exist: call prepare_dataset() before writing fragments")
        if not _same_types(ds.schema, schema):
            raise StoreError(
                f"{uri} has columns {ds.schema.names} but the new rows have {schema.names}: "
                "re-run with the same encoder settings, or remove the dataset first"
            )
        removed, updated = _delete_keys(ds, keys, key)
        op = lance.LanceOperation.Update(removed_fragment_ids=removed, updated_fragments=updated,
                                         new_fragments=metas)
        committed = lance.LanceDataset.commit(uri, op, read_version=ds.version)
        wanted = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
        stored = {k.decode(): v.decode() for k, v in (committed.schema.metadata or {}).items()}
        if wanted and wanted != stored:
            committed.replace_schema_metadata(wanted)
        return store.compact(name)


def _delete_keys(ds, keys: Sequence[str], key: str) -> tuple[list[int], list]:
    """Deletion vectors (written, not committed) for every stored row whose key is in ``keys``.

    Returns ``(ids of fragments left empty, updated FragmentMetadata)``.
    """
    keys = list(dict.fromkeys(keys))
    if not keys:
        return [], []
    where = sql_in(key, keys)
    table = ds.to_table(columns=[key], filter=where, with_row_address=True)
    hit = sorted({int(a) >> 32 for a in table.column("_rowaddr").to_pylist()})
    removed: list[int] = []
    updated: list = []
    for frag_id in hit:
        meta = ds.get_fragment(frag_id).delete(where)
        if meta is None:
            removed.append(frag_id)
        else:
            updated.append(meta)
    return removed, updated


def duplicate_keys(store: Store, name: str, key: str = "clip_id") -> dict[str, Any]:
    """``{key: count}`` for keys stored more than once (empty when keys are unique)."""
    table = store.table(name, columns=[key])
    if table is None:
        return {}
    import pyarrow.compute as pc

    counts = pc.value_counts(table.column(key))
    return {v["values"].as_py(): v["counts"].as_py() for v in counts if v["counts"].as_py() > 1}
