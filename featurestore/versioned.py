"""Values derived from a dataset, kept per dataset version (in memory, optionally on disk).

A long-running process (the analyst app, a notebook) asks the same store the same
questions many times, and a short one (``emofs similar CLIP``) should not pay for opening
Lance at all when nothing changed. :func:`dataset_version` answers "has this dataset
changed?" cheaply (a local store: one listing of the dataset's ``_versions/`` folder, no
Lance import; an object store: an open handle's latest version), and :func:`per_version`
rebuilds a derived value only when the answer is yes. A :class:`Snapshot` keeps the value
in a file under ``<store>/.emofs-cache/`` too, so the next process starts warm.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

from .errors import DatasetChangedError, SchemaVersionError
from .manifests import local_latest_version, newest_manifest
from .schema import SCHEMA_VERSION, schema_version_of
from .store import Store
from .vanished import read_latest

log = logging.getLogger(__name__)

__all__ = ["dataset_version", "manifest_stamp", "per_version", "Snapshot", "CACHE_DIR"]

T = TypeVar("T")

#: Files derived from datasets (safe to delete: rebuilt on the next read).
CACHE_DIR = ".emofs-cache"

_HANDLES: dict[str, Any] = {}
_VALUES: dict[tuple[str, str], tuple[int | None, Any]] = {}
_LOCK = threading.Lock()


def manifest_stamp(store: Store, name: str, version: int) -> str | None:
    """Identifies the manifest of ``version`` itself by its bytes (a local store; None on an
    object store or when ``version`` is not the newest): a dataset deleted and written
    afresh restarts at version 1 with new data file names, and must not match what was
    derived from the old one; a copy of the store (new inodes and times) still matches."""
    if not store.is_local:
        return None
    newest = newest_manifest(store.path(name))
    if newest is None or newest[0] != version:
        return None
    try:
        data = (Path(store.path(name)) / "_versions" / newest[1]).read_bytes()  # KBs: fragment list
    except OSError:
        return None
    return f"{version}:{newest[1]}:{hashlib.blake2b(data, digest_size=16).hexdigest()}"


def dataset_version(store: Store, name: str) -> int | None:
    """The latest version of dataset ``name`` (None when it does not exist), cheaply.

    A local store reads it from the manifest file names (microseconds, no Lance). On an
    object store the first call opens the dataset; later calls ask that open handle for
    the latest version (a look at the version files, no manifest read), which sees every
    commit made since, by this process or another.
    """
    key = store.path(name)
    if store.is_local:
        return local_latest_version(key)
    handle = _HANDLES.get(key)
    if handle is not None:
        try:
            return int(handle.latest_version)
        except Exception:  # noqa: BLE001 - dataset removed or unreadable: open it afresh
            _HANDLES.pop(key, None)
    handle = store.dataset(name)
    if handle is None:
        return None
    _HANDLES[key] = handle
    return int(handle.version)


@dataclass(frozen=True)
class Snapshot(Generic[T]):
    """How a derived value is kept in ``<store>/.emofs-cache/<file>`` (local stores only).

    Attributes:
        file: the file name, e.g. ``clip_meta.json``.
        dump: value -> a JSON-serialisable object.
        load: that object -> the value.
    """

    file: str
    dump: Callable[[T], Any]
    load: Callable[[Any], T]

    def read(self, store: Store, name: str, version: int | None) -> T | None:
        """The value saved for ``version`` of dataset ``name``, else None.

        Raises:
            SchemaVersionError: it was saved from a store a newer emofs wrote.
        """
        if not store.is_local or version is None:
            return None
        try:
            saved = json.loads((Path(store.uri) / CACHE_DIR / self.file).read_text())
        except (OSError, ValueError):
            return None
        stamp = manifest_stamp(store, name, version)
        if not isinstance(saved, dict) or stamp is None or saved.get("stamp") != stamp:
            return None
        if int(saved.get("schema_version", 0)) > SCHEMA_VERSION:
            raise SchemaVersionError.of(store.uri, int(saved["schema_version"]), SCHEMA_VERSION)
        try:
            return self.load(saved["value"])
        except (KeyError, TypeError, ValueError):
            return None

    def write(self, store: Store, name: str, version: int | None, value: T, *,
              schema_version: int = SCHEMA_VERSION) -> None:
        """Save ``value`` for ``version`` of dataset ``name`` (whose schema metadata says
        ``schema_version``); best effort (a read-only store just stays cold)."""
        stamp = None if version is None else manifest_stamp(store, name, version)
        if stamp is None:
            return
        folder = Path(store.uri) / CACHE_DIR
        target = folder / self.file
        tmp = folder / f".{self.file}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            folder.mkdir(exist_ok=True)
            tmp.write_text(json.dumps({"stamp": stamp, "schema_version": schema_version,
                                       "value": self.dump(value)}))
            os.replace(tmp, target)  # atomic: a reader sees the old file or the new one
        except OSError as exc:
            log.debug("could not save %s: %s", target, exc)
            tmp.unlink(missing_ok=True)
        _remove_stale_temporaries(folder, self.file)


#: A snapshot's temporary file older than this was left by a process killed mid-write.
_STALE_TMP_S = 3600


def _remove_stale_temporaries(folder: Path, file: str) -> None:
    for tmp in folder.glob(f".{file}.*.tmp"):
        try:
            if time.time() - tmp.stat().st_mtime > _STALE_TMP_S:
                tmp.unlink()
        except OSError:
            continue  # another process removed it, or the folder is read-only


def per_version(store: Store, name: str, what: str, build: Callable[[Any], T], *,
                snapshot: Snapshot[T] | None = None) -> T:
    """``build(dataset)`` for the current version of dataset ``name``, cached.

    Args:
        store: the store.
        name: the dataset (e.g. ``clips.lance``).
        what: names the derived value, so several can be kept per dataset.
        build: turns the opened dataset (None when it does not exist) into the value.
        snapshot: also keep the value on disk, so another process reads it for the same
            version without opening the dataset.
    """
    key = (store.path(name), what)
    version = dataset_version(store, name)
    cached = _VALUES.get(key)
    if cached is not None and cached[0] == version:
        return cached[1]
    with _LOCK:
        cached = _VALUES.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        saved = snapshot.read(store, name, version) if snapshot else None
        if saved is not None:
            _VALUES[key] = (version, saved)
            return saved
        handle = _HANDLES.get(store.path(name))  # opened by dataset_version: reuse it
        ds = handle if handle is not None and handle.version == version else store.dataset(name)
        try:  # a vacuum deleting the files of ``ds`` mid-build: rebuilt from the latest version
            ds, value = read_latest(lambda: store.dataset(name), lambda d: (d, build(d)),
                                    what=store.path(name), first=ds)
        except DatasetChangedError:
            _HANDLES.pop(store.path(name), None)
            raise
        if ds is not None and handle is not None and ds is not handle:
            _HANDLES[store.path(name)] = ds  # the stale handle's version is gone
        built = None if ds is None else ds.version
        _VALUES[key] = (built, value)
        if snapshot and ds is not None:
            snapshot.write(store, name, built, value, schema_version=schema_version_of(ds))
        return value
