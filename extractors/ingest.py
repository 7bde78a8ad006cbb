"""`emofs ingest`: walk folders, probe media, upsert clip rows, join a labels file."""

from __future__ import annotations

import errno
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa

from featurestore import Store, sql_in
from featurestore.annotations import LabelMatch, match_labels, read_labels_csv
from featurestore.progress import track_progress
from featurestore.errors import InputError, LabelsError
from featurestore.ids import ClipIdAllocator
from featurestore.remote import ObjectPath, is_remote, list_objects
from featurestore.schema import CLIPS, MEDIA_COLUMNS, features_name

from .probe import MEDIA_EXTENSIONS, ProbeError, probe, sha256_file

log = logging.getLogger(__name__)

__all__ = ["IngestReport", "ingest", "find_media", "printable_path"]

_MEDIA_SCHEMA = pa.schema(list(MEDIA_COLUMNS))
_EXAMPLES = 5


@dataclass
class IngestReport:
    """What one ingest run did (printed as the summary)."""

    files: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    annotated: int = 0
    #: Columns of the labels CSV that landed on clip rows.
    annotated_columns: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    unmatched_labels: list[tuple[int, str]] = field(default_factory=list)
    ambiguous_labels: list[str] = field(default_factory=list)
    labels_on_failed_files: int = 0
    version_before: int | None = None
    version_after: int | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {
            "files": self.files,
            "new": self.new,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "annotated": self.annotated,
            "annotated_columns": self.annotated_columns,
            "errors": [{"uri": u, "message": m} for u, m in self.errors],
            "unmatched_labels": len(self.unmatched_labels),
            "unmatched_label_examples": [k for _, k in self.unmatched_labels[:_EXAMPLES]],
            "ambiguous_labels": len(self.ambiguous_labels),
            "version_before": self.version_before,
            "version_after": self.version_after,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class _Candidate:
    clip_id: str
    path: Path
    root: Path
    rel_path: str


def find_media(
    paths: Iterable[str | os.PathLike],
    *,
    unreadable: list[tuple[Path, str]] | None = None,
) -> Iterator[tuple[Path, Path]]:
    """Yield ``(root, file)`` for every media file under ``paths`` (sorted, no dot-files).

    A folder is its own root; a single file's root is its parent folder. A media name in a
    folder that cannot be read as a file (a dangling symbolic link, a link loop, a FIFO) is
    not yielded: it goes to ``unreadable`` as ``(path, reason)`` when that list is given
    (``ingest`` turns each into an errors row), else it is skipped with a debug log line.

    Raises:
        InputError: a path does not exist, or a file given directly is not media.
    """
    for raw in paths:
        if is_remote(str(raw)):  # a bucket prefix or object: listed, never downloaded
            yield from _find_remote_media(str(raw))
            continue
        path = Path(raw).expanduser()
        if not path.exists():
            if path.is_symlink():  # a dangling link or a link loop given by name
                raise InputError(f"{printable_path(path)} is a {_unreadable_reason(path)}")
            raise InputError(f"{printable_path(path)} does not exist: pass existing folders or media files")
        path = path.resolve()
        if path.is_file():
            if path.suffix.lower() not in MEDIA_EXTENSIONS:
                raise InputError(
                    f"{printable_path(path)} is not a media file emofs reads (extensions: "
                    f"{', '.join(sorted(MEDIA_EXTENSIONS))})"
                )
            reason = _name_problem(path)
            if reason is None:
                yield path.parent, path
            elif unreadable is not None:
                unreadable.append((path, reason))
            else:
                raise InputError(f"{printable_path(path)}: {reason}")
            continue
        for folder, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith(".") or Path(name).suffix.lower() not in MEDIA_EXTENSIONS:
                    continue
                file = Path(folder) / name
                reason = _unreadable_reason(file)
                if reason is None:
                    yield path, file
                elif unreadable is not None:
                    unreadable.append((file, reason))
                else:
                    log.debug(f"skipped {printable_path(file)}: {reason}")


def _find_remote_media(uri: str):
    kind, files = list_objects(uri)
    if kind == "missing":
        raise InputError(f"{uri} does not exist: pass existing prefixes or media objects")
    if kind == "file":
        if files[0].suffix.lower() not in MEDIA_EXTENSIONS:
            raise InputError(f"{uri} is not a media file emofs reads (extensions: "
                             f"{', '.join(sorted(MEDIA_EXTENSIONS))})")
        yield files[0].parent, files[0]
        return
    root = ObjectPath(uri)
    for file in files:
        if file.suffix.lower() in MEDIA_EXTENSIONS:
            yield root, file


def printable_path(path: str | os.PathLike) -> str:
    """``path`` as valid UTF-8 text: bytes of a name that is not UTF-8 (held by Python as
    lone surrogates) shown as ``\\xNN`` escapes, so the name can be printed, logged and
    stored in Arrow (``lat\\xe9.wav``)."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def _name_problem(path: Path) -> str | None:
    """Why ``path`` cannot be stored (its name is not UTF-8), or None.

    Arrow strings, and so ``clip_id`` / ``uri``, hold UTF-8 only: such a file becomes an
    ``ingest`` errors row (under its printable name) and the other files go on.
    """
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return ("file name is not valid UTF-8: rename it to UTF-8 (e.g. `convmv -f latin1 "
                "-t utf8 --notest FILE`) and ingest again")
    return None


def _unreadable_reason(path: Path) -> str | None:
    """Why ``path`` cannot be read as a media file (None when it can be)."""
    import stat

    name = _name_problem(path)
    if name is not None:
        return name
    try:
        info = os.stat(path)  # follows links: a loop or a dangling one fails here
    except OSError as exc:
        if path.is_symlink():
            if exc.errno == errno.ELOOP:
                return "symbolic link loop (its chain of links never reaches a file): fix or remove the link"
            return (f"dangling symbolic link to {os.readlink(path)!r}: restore its target "
                    "or remove the link")
        return f"cannot read file ({exc.strerror or exc}): check it exists and is readable"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file (a pipe, socket or device): copy the media into a file"
    return None


def _record_unreadable(store: Store, unreadable: list[tuple[Path, str]], report: IngestReport) -> None:
    """One ``ingest`` errors row and one warning per file :func:`find_media` could not read."""
    if not unreadable:
        return
    now = datetime.now(timezone.utc)
    store.record_errors(
        {"clip_id": None, "uri": printable_path(path), "stage": "ingest", "encoder": None,
         "message": reason, "at": now}
        for path, reason in unreadable
    )
    for path, reason in unreadable:
        log.warning(f"skipped {printable_path(path)}: {reason}")
        report.errors.append((printable_path(path), reason))


def ingest(
    paths: Iterable[str | os.PathLike],
    store: Store,
    *,
    labels: str | os.PathLike | None = None,
    batch_size: int = 256,
    workers: int = 4,
    progress: bool = True,
) -> IngestReport:
    """Add (or refresh) every media file under ``paths`` in ``store``.

    Unchanged files (same size and mtime as stored) are not re-read; new or changed ones
    are probed and hashed in a thread pool and upserted every ``batch_size`` clips. An
    unreadable file becomes an ``errors.lance`` row and a warning; the run goes on. A labels
    CSV is joined by ``path`` / ``clip_id`` / ``name`` and its columns land on the rows.

    Returns:
        An :class:`IngestReport`; nothing is written when nothing changed.
    """
    import time

    started = time.perf_counter()
    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1 (got {batch_size})")
    labels_table = read_labels_csv(labels) if labels is not None else None  # fail early
    store.check_writable()  # a read-only store fails here, before any file is probed
    report = IngestReport(version_before=store.version())
    existing = _existing_rows(store)
    allocator = ClipIdAllocator({cid: row["uri"] for cid, row in existing.items()})
    synced = [report.version_before]  # the clips version the allocator has seen

    roots: list[Path] = []
    found = list(find_media(paths, unreadable=(unreadable := [])))
    _record_unreadable(store, unreadable, report)
    adoptable = _adoptable_rows(existing, [path for _, path in found])
    candidates: list[_Candidate] = []
    for root, path in found:
        if root not in roots:
            roots.append(root)
        rel = path.relative_to(root).as_posix()
        if path.stem in adoptable:
            clip_id = allocator.adopt(adoptable.pop(path.stem), str(path))
        else:
            clip_id = allocator.allocate(str(path), root, rel)
        candidates.append(_Candidate(clip_id, path, root, rel))
    if not candidates and labels_table is None:
        raise InputError(
            f"no media files under {', '.join(map(str, paths))} (extensions: "
            f"{', '.join(sorted(MEDIA_EXTENSIONS))})"
        )
    report.files = len(candidates)

    stale: list[_Candidate] = []
    for cand in candidates:
        row = existing.get(cand.clip_id)
        stat = cand.path.stat()
        if row and row["size_bytes"] == stat.st_size and row["mtime_ns"] == stat.st_mtime_ns:
            report.unchanged += 1
        else:
            stale.append(cand)

    failed: set[str] = set()
    with track_progress(len(stale), "probing", enabled=progress) as advance:
        for batch in _chunks(stale, batch_size):
            rows, errs = _probe_batch(batch, existing, workers)
            if rows:
                _commit_clips(store, rows, allocator, existing, synced)
            if errs:
                store.record_errors(errs)
                for err in errs:
                    log.warning(f"skipped {err['uri']}: {err['message']}")
                    report.errors.append((err["uri"], err["message"]))
                    failed.add(err["uri"])
            for row in rows:
                if row["clip_id"] in existing:
                    report.updated += 1
                else:
                    report.new += 1
            advance(len(batch))

    if labels_table is not None:
        with store.writing():  # the label join reads the clips it then updates
            _apply_labels(store, labels_table, Path(labels), roots, failed, report)
    report.version_after = store.version()
    report.seconds = time.perf_counter() - started
    return report


def _commit_clips(store: Store, rows: list[dict[str, Any]], allocator: ClipIdAllocator,
                  existing: dict[str, dict[str, Any]], synced: list) -> None:
    """Settle the batch's clip ids and upsert it: one critical section under the write lock.

    Ids were allocated against the store as it was when the run started; another process
    may have committed some of them since (two ingests of folders with the same relative
    paths). Under the lock the allocator takes in every row committed meanwhile (only when
    the clips version moved past ``synced[0]``), re-settles each row's id, and the batch
    commits before any other writer can take those ids.
    """
    with store.writing():
        version = store.version()
        if version != synced[0]:
            table = store.table(CLIPS, columns=["clip_id", "uri"])
            allocator.sync(dict(zip(table.column("clip_id").to_pylist(),
                                    table.column("uri").to_pylist())))
        for row in rows:
            row["clip_id"] = allocator.allocate(row["uri"], Path(row["root"]), row["rel_path"])
        synced[0] = store.upsert_clips(pa.Table.from_pylist(rows, schema=_MEDIA_SCHEMA))
        store.clear_errors("ingest", [r["uri"] for r in rows])
        _drop_stale_features(store, rows, existing)


def _existing_rows(store: Store) -> dict[str, dict[str, Any]]:
    columns = ["clip_id", "name", "uri", "has_media", "sha256", "size_bytes", "mtime_ns"]
    table = store.table(CLIPS, columns=columns)
    if table is None:
        return {}
    return {row["clip_id"]: row for row in table.to_pylist()}


def _drop_stale_features(store: Store, rows: list[dict[str, Any]], existing) -> None:
    """Delete the feature rows of clips whose media bytes changed, so extract redoes them."""
    changed = [
        r["clip_id"] for r in rows
        if (old := existing.get(r["clip_id"])) and old.get("sha256") and old["sha256"] != r["sha256"]
    ]
    if not changed:
        return
    for name in store.feature_sets():
        store.delete(features_name(name), sql_in("clip_id", changed))


def _adoptable_rows(existing: dict[str, dict[str, Any]], files: list[Path]) -> dict[str, str]:
    """``{stem: clip_id}`` of rows imported without media that a new file should fill.

    Emotion-LLaMA / MER imports create rows keyed by name; when the media arrives, the file
    whose stem is that name takes the row over (only when exactly one row and one file of
    this run carry the name, so nothing is guessed).
    """
    orphans: dict[str, list[str]] = {}
    for clip_id, row in existing.items():
        if row.get("has_media") is False and not row.get("uri") and row.get("name"):
            orphans.setdefault(row["name"], []).append(clip_id)
    stems: dict[str, int] = {}
    for path in files:
        stems[path.stem] = stems.get(path.stem, 0) + 1
    return {
        name: ids[0]
        for name, ids in orphans.items()
        if len(ids) == 1 and stems.get(name) == 1
    }


def _probe_batch(batch, existing, workers):
    """Probe + hash a batch in threads (PyAV and hashlib release the GIL)."""
    now = datetime.now(timezone.utc)
    rows, errors = [], []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for cand, outcome in zip(batch, pool.map(_probe_one, batch)):
            if isinstance(outcome, str):
                errors.append(
                    {"clip_id": cand.clip_id, "uri": str(cand.path), "stage": "ingest",
                     "encoder": None, "message": outcome, "at": now}
                )
                continue
            stat = cand.path.stat()
            rows.append(
                {
                    "clip_id": cand.clip_id,
                    "name": cand.path.stem,
                    "uri": str(cand.path),
                    "root": str(cand.root),
                    "rel_path": cand.rel_path,
                    "has_media": True,
                    "size_bytes": stat.st_size,
                    "mtime_ns": stat.st_mtime_ns,
                    "ingested_at": now,
                    **outcome,
                }
            )
    return rows, errors


def _probe_one(cand: _Candidate) -> dict[str, Any] | str:
    try:
        facts = probe(cand.path)
        facts["sha256"] = sha256_file(cand.path)
        return facts
    except ProbeError as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot read file ({exc.strerror or exc})"


def _apply_labels(store, labels_table, csv_path, roots, failed, report) -> None:
    """Join the labels file onto the store's clips and upsert only changed values."""
    clips = store.clips(columns=None)
    if clips.height == 0:
        raise LabelsError(f"no clips in {store.uri} to attach {csv_path} to: ingest media first")
    known = clips.select(["clip_id", "uri", "name"]).to_dicts()
    match: LabelMatch = match_labels(labels_table, csv_path=csv_path, roots=roots, clips=known)
    if match.ignored_columns:
        log.warning(
            f"ignored columns {', '.join(match.ignored_columns)} of {csv_path}: "
            "emofs derives them from the media"
        )
    # Rows naming a file that failed to probe are not "unmatched": the file exists.
    failed_rel = {Path(u) for u in failed}
    for line, key in match.unmatched:
        path = Path(key)
        hits = [r / path for r in roots] if not path.is_absolute() else [path]
        if any(h.resolve() in failed_rel for h in hits):
            report.labels_on_failed_files += 1
        else:
            report.unmatched_labels.append((line, key))
    report.ambiguous_labels = match.ambiguous
    if match.duplicates:
        log.warning(f"{len(match.duplicates)} clips appear on several rows of {csv_path}; the last row wins")
    if not match.values or not match.columns:
        return

    names = [f.name for f in match.columns]
    report.annotated_columns = names
    current = {
        row["clip_id"]: row
        for row in clips.select(["clip_id", *[n for n in names if n in clips.columns]]).to_dicts()
    }
    changed = []
    for clip_id, values in match.values.items():
        stored = current.get(clip_id, {})
        if any(_differs(stored.get(n), values.get(n)) for n in names):
            changed.append({"clip_id": clip_id, **values})
    if not changed:
        return
    schema = pa.schema([pa.field("clip_id", pa.string()), *match.columns])
    table = pa.Table.from_pylist(changed, schema=schema)
    table = _cast_to_stored(table, clips, csv_path)
    store.upsert_clips(table)
    report.annotated = len(changed)


def _cast_to_stored(table: pa.Table, clips, csv_path: Path) -> pa.Table:
    """Cast label columns to the types the store already uses for them."""
    stored_schema = clips.to_arrow().schema
    for i, fld in enumerate(table.schema):
        if fld.name in stored_schema.names:
            target = stored_schema.field(fld.name).type
            if fld.type != target:
                try:
                    table = table.set_column(i, fld.name, table.column(i).cast(target))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise LabelsError(
                        f"column {fld.name!r} of {csv_path} holds {fld.type} values but the "
                        f"store keeps {target} there: fix the values or rename the column"
                    ) from exc
    return table


def _differs(stored: Any, new: Any) -> bool:
    if stored is None or new is None:
        return stored is not new
    if isinstance(stored, float) or isinstance(new, float):
        try:
            return float(stored) != float(new)
        except (TypeError, ValueError):
            return True
    return str(stored) != str(new)


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
