"""The store: a directory (or object-store URI) of Lance datasets.

Layout::

    <store>/clips.lance                 one row per clip, keyed by clip_id
    <store>/errors.lance                one row per (stage, encoder, file) that failed
    <store>/features/<encoder>.lance    one row per clip per encoder
    <store>/predictions/<run>.lance     one row per clip per prediction run
    <store>/index/<name>.faiss          FAISS indexes (+ manifest json)

Every write is an idempotent upsert (``merge_insert`` on the key), committed in batches by
the caller, so a killed run loses at most the batch in flight; small fragments are merged
as they pile up (``featurestore.compaction``). Every read-modify-write holds the store's
write lock (:meth:`Store.writing`, ``featurestore.locking``), so two emofs processes
writing to one store at once never duplicate or lose rows.
"""

from __future__ import annotations

import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs

from .errors import DatasetChangedError, QueryError, SchemaVersionError, StoreError, StoreNotFoundError
from .locking import WriteLock
from .manifests import newest_manifest
from .filters import default_schema, validate_where
from .vanished import ATTEMPTS, is_storage_error, is_vanished, is_vanished_manifest, read_latest
from .remote import check_remote, filesystem, is_remote, lance_options
from .schema import (
    CLIPS,
    ERRORS,
    FEATURES_DIR,
    INDEX_DIR,
    LANCE_SUFFIX,
    PREDICTIONS_DIR,
    SCHEMA_VERSION,
    clips_schema,
    dataset_uri,
    errors_schema,
    schema_version_of,
)

__all__ = ["Store", "DEFAULT_STORE", "resolve_store_uri", "sql_quote", "sql_in"]

DEFAULT_STORE = "./emofs-store"
#: One write lock per store uri in this process, shared by every Store object of it (so
#: holds nest across objects and threads of one process serialise).
_LOCKS: dict[str, WriteLock] = {}
_LOCKS_GUARD = threading.Lock()
T = TypeVar("T")


def _write_lock(uri: str, local: bool) -> WriteLock:
    with _LOCKS_GUARD:
        lock = _LOCKS.get(uri)
        if lock is None:
            lock = _LOCKS[uri] = WriteLock(uri)
        return lock


def resolve_store_uri(uri: str | os.PathLike | None = None) -> str:
    """Pick the store location: the argument, else ``$EMOFS_STORE``, else ``./emofs-store``."""
    chosen = uri if uri not in (None, "") else os.environ.get("EMOFS_STORE") or DEFAULT_STORE
    chosen = str(chosen)
    if _is_remote(chosen):
        return chosen.rstrip("/")
    return str(Path(chosen).expanduser().absolute())


def _is_remote(uri: str) -> bool:
    return is_remote(uri)


class Store:
    """An emofs feature store.

    Args:
        uri: store directory or object-store URI (``s3://bucket/store``); defaults to
            ``$EMOFS_STORE`` or ``./emofs-store``.
        create: when False, a store that does not exist yet raises
            :class:`StoreNotFoundError` instead of being created on first write.

    Example:
        >>> store = Store("./emofs-store")
        >>> store.clips(where="label = 'sad'").height
    """

    def __init__(self, uri: str | os.PathLike | None = None, *, create: bool = True):
        self.uri = resolve_store_uri(uri)
        self.is_local = not _is_remote(self.uri)
        check_remote(self.uri)  # an unreachable bucket: one StoreError line, in seconds
        self._lock = _write_lock(self.uri, self.is_local)
        if self.is_local:
            local = Path(self.uri)
            if local.exists() and not local.is_dir():
                raise StoreError(
                    f"store path {local} is a file, not a directory: pass --store DIR "
                    "(or set EMOFS_STORE) to a directory or to a path that does not exist yet"
                )
        self._schema_checked = False  # on the first dataset opened (Lance loads lazily)
        if not create and not self.exists():
            raise StoreNotFoundError(
                f"no emofs store at {self.uri}: run `emofs ingest PATH --store {self.uri}` "
                "first, or point --store / EMOFS_STORE at an existing store"
            )

    # ------------------------------------------------------------------ paths
    def path(self, *parts: str) -> str:
        """The URI of a file or dataset inside the store (``store.path(features_name("hubert"))``).

        Same as :func:`featurestore.schema.dataset_uri` on ``store.uri``.
        """
        return dataset_uri(self.uri, *parts)

    def exists(self) -> bool:
        """True when the store holds a clips table (a local store: one committed version,
        seen without opening Lance)."""
        if self.is_local:
            return newest_manifest(self.path(CLIPS)) is not None
        return self.dataset(CLIPS) is not None

    def _check_schema_version(self) -> None:
        """Refuse a store a newer emofs wrote; only a passed check is remembered, so every
        later read and write of such a store is refused too."""
        clips = self._open(CLIPS)
        found = 0 if clips is None else schema_version_of(clips)
        if found > SCHEMA_VERSION:
            raise SchemaVersionError.of(self.uri, found, SCHEMA_VERSION)
        self._schema_checked = True

    # ----------------------------------------------------------------- writing
    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the store's write lock for the block (reentrant; other processes wait).

        Wrap every read-modify-write in it (read what is stored, decide, commit), so the
        decision is still true when the commit lands. Readers never wait.

        Raises:
            StoreError: the store is not writable, or another process held the lock for
                longer than its timeout.
        """
        with self._lock.hold():
            yield

    def check_writable(self) -> None:
        """Fail in one line, before any work, when this process cannot write to the store.

        Write commands call it first (ingest, extract, label, index build, vacuum, check
        --repair); it never waits for another writer. A no-op for object stores.

        Raises:
            StoreError: the store directory is read-only or not ours (says how to fix it).
        """
        self._lock.check_writable()

    # --------------------------------------------------------------- datasets
    def dataset(self, name: str, version: int | None = None):
        """Open ``<store>/<name>`` as a Lance dataset, or return None if it does not exist."""
        if not self._schema_checked:
            self._check_schema_version()  # a store a newer emofs wrote: refuse before reading
        return self._open(name, version)

    def _open(self, name: str, version: int | None = None):
        import lance

        uri = self.path(name)
        for attempt in range(1, ATTEMPTS + 1):
            if self.is_local and not Path(uri).exists():
                return None
            try:
                return lance.dataset(uri, version=version, storage_options=lance_options(uri))
            except (FileNotFoundError, ValueError, OSError) as exc:
                if is_vanished_manifest(exc):
                    if version is None and attempt < ATTEMPTS:
                        continue  # the manifest listed as the latest was vacuumed: list again
                    raise DatasetChangedError(
                        f"{'version %d of ' % version if version is not None else ''}{uri} was "
                        f"deleted by a concurrent `emofs vacuum` while opening it "
                        f"({_first_line(exc)}): run it again"
                    ) from exc
                if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
                    raise
                if self.is_local and Path(uri).exists():
                    if version is None and newest_manifest(uri) is None:
                        return None  # no committed version yet: a create in flight (the manifest comes last)
                    raise StoreError(
                        f"{uri} exists but is not a readable Lance dataset ({_first_line(exc)}): "
                        "move it aside and re-run the command that writes it"
                    ) from exc
                return None
        return None  # pragma: no cover - the loop returns or raises

    def read(self, name: str, read: Callable[[Any], T]) -> T:
        """``read(dataset)`` on the latest version of ``name`` (None when it does not exist),
        run again on a freshly opened latest version when a concurrent ``emofs vacuum``
        deletes a file of the version being read (``featurestore.vanished``).

        Raises:
            DatasetChangedError: files kept vanishing (every attempt raced a vacuum).
        """
        return read_latest(lambda: self.dataset(name), read, what=self.path(name))

    def table(
        self,
        name: str,
        *,
        where: str | None = None,
        columns: list[str] | None = None,
        limit: int | None = None,
    ) -> pa.Table | None:
        """Read ``name`` (optionally filtered by a SQL ``where``) as an Arrow table."""
        ds = self.dataset(name)
        validate_where(where, ds.schema if ds is not None else default_schema(name))
        if ds is None:
            return None

        def scan(ds):
            if ds is None:  # removed since the first open
                return None
            try:
                return ds.to_table(filter=where or None, columns=columns, limit=limit)
            except (ValueError, OSError) as exc:
                if is_vanished(exc):
                    raise  # read_latest reopens the latest version
                if not where or is_storage_error(exc):
                    raise StoreError(f"cannot read {self.path(name)}: {_first_line(exc)}") from exc
                raise QueryError(  # the filter passed validate_where: a data-dependent failure
                    f"cannot evaluate --where {where!r} on {name}: {_first_line(exc)} "
                    f"(columns: {', '.join(ds.schema.names)})"
                ) from exc

        return read_latest(lambda: self.dataset(name), scan, what=self.path(name), first=ds)

    def upsert(
        self,
        name: str,
        table: pa.Table,
        *,
        key: str | list[str] = "clip_id",
        schema: pa.Schema | None = None,
    ) -> int:
        """Insert or update rows of ``name`` by ``key``; create the dataset on first write.

        ``table`` may carry a subset of the dataset's columns (columns it lacks keep their
        stored values on matched rows). Columns the dataset does not have yet are added
        first (null for existing rows). ``schema`` is the full schema used when the dataset
        is created (its metadata is kept). Returns the new dataset version.

        Holds the write lock from the read of the stored keys to the commit.
        """
        import lance

        with self.writing():
            ds = self.dataset(name)
            if ds is None:
                if schema is not None:  # the full schema, plus any extra columns of the rows
                    extra = [f for f in table.schema if f.name not in schema.names]
                    table = _conform(table, pa.schema([*schema, *extra], metadata=schema.metadata))
                return lance.write_dataset(table, self.path(name), mode="create").version
            missing = [f for f in table.schema if f.name not in ds.schema.names]
            if missing:
                ds.add_columns(missing)
                ds = self.dataset(name)
            table = _conform(table, pa.schema([ds.schema.field(n) for n in table.column_names]))
            (
                ds.merge_insert(key)
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute(table)
            )
            return self.compact(name)

    def compact(self, name: str) -> int | None:
        """Merge small fragments of ``name`` when there are many (tiered, see
        ``featurestore.compaction``); returns the dataset's version."""
        from .compaction import compact_if_fragmented

        with self.writing():
            ds = self.dataset(name)
            if ds is not None and compact_if_fragmented(ds):
                ds = self.dataset(name)
            return None if ds is None else ds.version

    def delete(self, name: str, predicate: str) -> None:
        """Delete the rows of ``name`` matching a SQL predicate (no-op if absent)."""
        with self.writing():
            ds = self.dataset(name)
            if ds is not None:
                ds.delete(predicate)

    def version(self, name: str = CLIPS) -> int | None:
        """The Lance version of one dataset (default: clips), None if it does not exist."""
        ds = self.dataset(name)
        return None if ds is None else ds.version

    def list_datasets(self, folder: str) -> list[str]:
        """Names (without ``.lance``) of the datasets under ``<store>/<folder>/``."""
        fs, root = filesystem(self.path(folder))
        try:
            infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
        except (FileNotFoundError, OSError):
            return []
        return sorted(
            Path(i.path).name[: -len(LANCE_SUFFIX)]
            for i in infos
            if i.type == pafs.FileType.Directory and i.path.endswith(LANCE_SUFFIX)
        )

    # ------------------------------------------------------------------ clips
    def clips(
        self,
        where: str | None = None,
        columns: list[str] | None = None,
        limit: int | None = None,
    ):
        """Clip rows as a polars DataFrame (empty frame if the store has none)."""
        import polars as pl

        table = self.table(CLIPS, where=where, columns=columns, limit=limit)
        if table is None:
            table = clips_schema().empty_table()
            if columns:
                table = table.select(columns)
        return pl.from_arrow(table)

    def upsert_clips(self, table: pa.Table) -> int:
        """Insert or update clip rows (by ``clip_id``)."""
        return self.upsert(CLIPS, table, schema=clips_schema())

    # ----------------------------------------------------------------- errors
    def record_errors(self, rows: Iterable[dict[str, Any]]) -> None:
        """Store failures (one row per stage, encoder and file; a newer one replaces it)."""
        rows = list(rows)
        if not rows:
            return
        from .schema import error_key

        for row in rows:
            row["error_key"] = error_key(row["stage"], row.get("encoder"), row["uri"])
        table = pa.Table.from_pylist(rows, schema=errors_schema())
        self.upsert(ERRORS, table, key="error_key", schema=errors_schema())

    def clear_errors(self, stage: str, uris: Iterable[str], encoder: str | None = None) -> None:
        """Forget earlier failures of ``uris`` at ``stage`` (they succeeded this time)."""
        from .schema import error_key

        keys = [error_key(stage, encoder, u) for u in uris]
        if not keys or self.dataset(ERRORS) is None:
            return
        with self.writing():
            ds = self.dataset(ERRORS)
            for start in range(0, len(keys), 500):
                where = sql_in("error_key", keys[start : start + 500])
                if ds.count_rows(filter=where):
                    ds.delete(where)

    def errors(self, where: str | None = None):
        """Failure rows as a polars DataFrame."""
        import polars as pl

        table = self.table(ERRORS, where=where)
        return pl.from_arrow(table if table is not None else errors_schema().empty_table())

    # ------------------------------------------------------------- inventory
    def feature_sets(self) -> list[str]:
        """Names of the feature sets in the store."""
        return self.list_datasets(FEATURES_DIR)

    def prediction_runs(self) -> list[str]:
        """Names of the prediction datasets in the store."""
        return self.list_datasets(PREDICTIONS_DIR)

    def index_names(self) -> list[str]:
        """Names of the FAISS indexes in the store."""
        fs, root = filesystem(self.path(INDEX_DIR))
        infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
        return sorted(Path(i.path).stem for i in infos if i.path.endswith(".faiss"))

    def size_bytes(self, name: str | None = None) -> int:
        """Bytes on disk (or in the bucket) under the store, or under one dataset ``name``."""
        fs, root = filesystem(self.uri if name is None else self.path(name))
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
        return sum(i.size or 0 for i in infos if i.type == pafs.FileType.File)

    def remove(self, name: str) -> None:
        """Delete a whole dataset or file inside the store."""
        with self.writing():
            if self.is_local:
                target = Path(self.path(name))
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
                return
            fs, root = filesystem(self.path(name))
            info = fs.get_file_info(root)
            if info.type == pafs.FileType.Directory:
                fs.delete_dir(root)
            elif info.type == pafs.FileType.File:
                fs.delete_file(root)

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    # ---------------------------------------------------------------- similar
    def similar(self, query: str, k: int = 10, **kwargs):
        """Clips most similar to ``query`` (a clip_id or the path of a stored clip) as a
        polars DataFrame ``rank, clip_id, path, label, score``.

        Keyword arguments (``index``, ``where``, ``include_self``, ``file_vectors``) are
        those of :func:`featurestore.index.find_similar`. A new media file needs its
        vectors extracted: use :func:`workflows.similar.similar` (or ``emofs similar FILE``).
        """
        from .index import similar

        return similar(self, query, k=k, **kwargs)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast ``table`` to ``schema`` (adding all-null columns it lacks), keep metadata."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            col = table.column(field.name)
            columns.append(col if col.type == field.type else col.cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def sql_quote(value: str) -> str:
    """Quote a string literal for a Lance (DataFusion) SQL filter."""
    return "'" + value.replace("'", "''") + "'"


def sql_in(column: str, values) -> str:
    """``column IN ('a', 'b')`` for a Lance SQL filter; ``false`` for no values."""
    values = list(values)
    return f"{column} IN ({', '.join(sql_quote(v) for v in values)})" if values else "false"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    # Lance appends the Rust source location; users need only the reason.
    return line.split(", /home/")[0].split(", /rust")[0]
