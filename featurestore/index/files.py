"""Index files inside the store: paths, byte I/O through the store's filesystem, manifest.

Layout inside the store::

    <store>/index/<name>.faiss        the serialised FAISS index (row i = id i)
    <store>/index/<name>.ids.parquet  row -> clip_id map (one string column, in id order)
    <store>/index/<name>.json         manifest: kind, params, encoders + weights, the
                                      feature-set fingerprints / versions it was built
                                      from, row count, store version, built_at, and the
                                      sha256 of the two files above and of the manifest's
                                      own content (``checksums``: faiss, ids, manifest)

Every write goes through a temporary (``<path>.tmp``) and a move; the three files of a
save are all written before any is moved (:func:`write_files`), and a full disk is a
:class:`~featurestore.errors.DiskFullError` with the temporaries removed.

Files are written through ``pyarrow.fs`` so a store on an object-store URI works too. The
per-process cache of loaded indexes lives here too, so that every module that rewrites or
deletes the files can invalidate it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from typing import Any, Callable

from ..diskspace import disk_full_as_error
from ..errors import IndexCorruptError, InputError
from ..remote import filesystem
from ..schema import INDEX_DIR
from ..store import Store

__all__ = [
    "index_paths",
    "check_index_name",
    "read_bytes",
    "write_bytes",
    "write_files",
    "delete_file",
    "file_stamp",
    "checksum",
    "checksum_problem",
    "read_manifest",
    "shared_manifest",
    "folder_names",
    "FileMemo",
    "MANIFEST_KINDS",
    "manifest_digest",
    "seal_manifest",
    "manifest_problem",
    "cached_index",
    "cache_index",
    "forget_index",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
#: (store uri, index name) -> (stamp of the files it was read from, loaded index).
_CACHE: dict[tuple[str, str], tuple[str, Any]] = {}


def index_paths(name: str) -> dict[str, str]:
    """Store-relative paths of index ``name``'s files.

    Args:
        name: index name.

    Returns:
        ``{"faiss": ..., "ids": ..., "manifest": ...}``.
    """
    return {
        "faiss": f"{INDEX_DIR}/{name}.faiss",
        "ids": f"{INDEX_DIR}/{name}.ids.parquet",
        "manifest": f"{INDEX_DIR}/{name}.json",
    }


def check_index_name(name: str) -> None:
    """Refuse an index name that could escape ``index/`` or is otherwise unusable.

    Raises:
        InputError: the name has a '/', a leading dot or other characters.
    """
    if not _NAME_RE.match(name or ""):
        raise InputError(
            f"invalid index name {name!r}: use letters, digits, '.', '_', '-', '+' "
            "(no '/' or leading dot)"
        )


def _fs(store: Store, rel: str):
    return filesystem(store.path(rel))


def write_bytes(store: Store, rel: str, data: bytes) -> None:
    """Write ``data`` to ``rel`` in the store (through a temporary file, then a move).

    Raises:
        DiskFullError: the disk is full (names the path and the bytes needed; the
            temporary file is removed and the old file, if any, is untouched).
    """
    write_files(store, {rel: data})


def write_files(store: Store, files: dict[str, bytes]) -> None:
    """Write several files all or nothing: every ``<path>.tmp`` first, then the moves.

    A write that fails (a full disk above all) removes every temporary and leaves the
    files already there as they were, so an index is never half new, half old.

    Args:
        files: store-relative path -> bytes, moved into place in this order.

    Raises:
        DiskFullError: the disk is full (names the first path, the bytes all the files
            need and what is free).
    """
    if not files:
        return
    placed = []
    for rel in files:
        fs, path = _fs(store, rel)
        placed.append((fs, path, f"{path}.tmp"))
    what = store.path(next(iter(files))) + (f" (+{len(files) - 1} files)" if len(files) > 1 else "")
    needed = sum(len(data) for data in files.values())
    with disk_full_as_error(what, needed):
        for fs, path, _ in placed:
            fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        try:
            for (fs, _, tmp), data in zip(placed, files.values()):
                with fs.open_output_stream(tmp) as handle:
                    handle.write(data)
        except BaseException:
            for fs, _, tmp in placed:
                _delete_quietly(fs, tmp)
            raise
        for fs, path, tmp in placed:
            fs.move(tmp, path)


def _delete_quietly(fs, path: str) -> None:
    try:
        fs.delete_file(path)
    except Exception:  # noqa: BLE001 - absent, or the store is gone: nothing to clean
        pass


def read_bytes(store: Store, rel: str) -> bytes | None:
    """The bytes of ``rel`` in the store, or None when the file does not exist."""
    fs, path = _fs(store, rel)
    try:
        with fs.open_input_stream(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        if "not found" in str(exc).lower() or "no such file" in str(exc).lower():
            return None
        raise


def delete_file(store: Store, rel: str) -> bool:
    """Delete ``rel`` in the store; True when there was a file to delete."""
    import pyarrow.fs as pafs

    fs, path = _fs(store, rel)
    if fs.get_file_info(path).type == pafs.FileType.File:
        fs.delete_file(path)
        return True
    return False


def file_stamp(store: Store, rel: str) -> str:
    """``"size|mtime_ns"`` of ``rel``: changes whenever the file is rewritten."""
    if store.is_local:  # one stat, not a filesystem object's
        try:
            st = os.stat(store.path(rel))
        except (FileNotFoundError, NotADirectoryError):
            return "None|None"
        return f"{st.st_size}|{st.st_mtime_ns}"
    fs, path = _fs(store, rel)
    file_info = fs.get_file_info(path)
    return f"{file_info.size}|{file_info.mtime_ns}"


def checksum(data: bytes) -> str:
    """The ``sha256:<hex>`` of ``data``, as manifests record each index file's bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def checksum_problem(manifest: dict[str, Any], role: str, data: bytes) -> str | None:
    """Why the bytes of file ``role`` (``faiss`` or ``ids``) disagree with the manifest.

    None when they match, or when the manifest records no checksum (written by an emofs
    from before checksums: nothing to verify).
    """
    want = (manifest.get("checksums") or {}).get(role)
    if not want:
        return None
    got = checksum(data)
    if got == want:
        return None
    return f"sha256 {got[7:19]}... where its manifest says {want[7:19]}..."


#: Index kinds a manifest may name (``auto`` is resolved before a build writes one).
MANIFEST_KINDS = ("flat", "ivf", "hnsw")


def manifest_digest(manifest: dict[str, Any]) -> str:
    """The ``sha256:<hex>`` of a manifest's own content (all of it but this digest).

    Canonical JSON (sorted keys, no spaces), so re-serialising the manifest never changes
    it and any edited value (``kind``, ``dim``, ``encoders``, a file checksum) does.
    """
    body = {k: v for k, v in manifest.items() if k != "checksums"}
    body["checksums"] = {k: v for k, v in (manifest.get("checksums") or {}).items() if k != "manifest"}
    return checksum(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def seal_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with ``checksums["manifest"]``: the :func:`manifest_digest` of the rest."""
    sealed = {**manifest, "checksums": dict(manifest.get("checksums") or {})}
    sealed["checksums"].pop("manifest", None)
    sealed["checksums"]["manifest"] = manifest_digest(sealed)
    return sealed


def manifest_problem(manifest: dict[str, Any], name: str) -> str | None:
    """Why manifest ``name`` cannot be trusted (edited, damaged, inconsistent), or None.

    Its own digest (:func:`seal_manifest`; manifests from before digests have none) and
    the fields every reader relies on: a known ``kind``, a positive ``dim`` that its
    feature sets' dims add up to, a row count, encoders with one weight each, its name.
    """
    want = (manifest.get("checksums") or {}).get("manifest")
    if want:
        got = manifest_digest(manifest)
        if got != want:
            return (f"its manifest was edited or damaged (content sha256 {got[7:19]}... where it "
                    f"records {want[7:19]}...)")
    kind = manifest.get("kind")
    if kind not in MANIFEST_KINDS:
        return f"its manifest names an unknown kind {kind!r} (one of {', '.join(MANIFEST_KINDS)})"
    dim, rows = manifest.get("dim"), manifest.get("rows")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        return f"its manifest has no valid dim ({dim!r})"
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
        return f"its manifest has no valid row count ({rows!r})"
    encoders, weights = manifest.get("encoders"), manifest.get("weights")
    if (not isinstance(encoders, list) or not encoders or not all(isinstance(e, str) for e in encoders)
            or not isinstance(weights, list) or len(weights) != len(encoders)
            or not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights)):
        return f"its manifest lists no valid encoders and weights ({encoders!r}, {weights!r})"
    if manifest.get("name", name) != name:
        return f"its manifest belongs to index {manifest.get('name')!r}"
    sets = manifest.get("feature_sets")
    if isinstance(sets, dict) and sets:
        if set(sets) != set(encoders):
            return f"its manifest's feature sets ({', '.join(sorted(sets))}) are not its encoders"
        dims = [(s or {}).get("dim") for s in sets.values()]
        if all(isinstance(d, int) for d in dims) and sum(dims) != dim:
            return f"its manifest's dim {dim} is not the sum of its feature sets' dims ({sum(dims)})"
    return None


def read_manifest(store: Store, name: str) -> dict[str, Any] | None:
    """The manifest of index ``name`` (None when it has none).

    Raises:
        IndexCorruptError: the manifest is not valid JSON (names the rebuild command).
    """
    rel = index_paths(name)["manifest"]
    raw = read_bytes(store, rel)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise IndexCorruptError(
            f"index manifest {store.path(rel)} is not valid JSON: "
            f"rebuild it with `emofs index build ... --name {name} --rebuild`"
        ) from exc


def shared_manifest(store: Store, name: str) -> dict[str, Any] | None:
    """:func:`read_manifest`, parsed once per version of the file: the caller must not
    change the dict it gets (it is shared). A local store checks the file's inode, size and
    mtime (one ``stat``; a save replaces the file through a move, so a new manifest always
    has a new inode); an object store reads the file every time.

    Raises:
        IndexCorruptError: the manifest is not valid JSON (names the rebuild command).
    """
    if not store.is_local:
        return read_manifest(store, name)
    return _MANIFESTS.get(store.path(index_paths(name)["manifest"]), lambda: read_manifest(store, name))


def _file_version(path: str) -> tuple[int, int, int] | None:
    """``(inode, size, mtime_ns)`` of a local file (None when absent)."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class FileMemo:
    """Values computed from local files, each kept per version of its file: a lookup costs
    one ``stat`` (inode, size, mtime) until the file changes. A value is kept only when the
    file did not change while it was computed; None (nothing to keep) is never kept."""

    def __init__(self):
        self._known: dict[str, tuple[tuple[int, int, int], Any]] = {}
        self._lock = threading.Lock()

    def get(self, path: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` for the file at ``path``, from memory while the file is unchanged;
        None when the file is absent."""
        version = _file_version(path)
        if version is None:
            return None
        known = self._known.get(path)
        if known is not None and known[0] == version:
            return known[1]
        value = compute()
        try:
            unchanged = _file_version(path) == version
        except OSError:
            unchanged = False
        if value is not None and unchanged:
            with self._lock:
                self._known[path] = (version, value)
        return value


_MANIFESTS = FileMemo()  # local manifest path -> its parsed manifest


#: local folder -> ((inode, mtime_ns) of the folder, its entries): kept only for a folder
#: last changed over this long before it was listed (a change within the file system's
#: timestamp granularity could otherwise leave the mtime as it was).
_SETTLED_NS = 2_000_000_000
_FOLDERS: dict[str, tuple[tuple[int, int], list[str]]] = {}


def folder_names(path: str) -> list[str] | None:
    """The entry names of local folder ``path`` (None when it does not exist), listed again
    only when the folder changed (one ``stat`` otherwise): creating, removing or renaming
    an entry sets the folder's mtime, and a folder is remembered only once that mtime is
    :data:`_SETTLED_NS` in the past, so a change can never leave the same mtime behind."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    key = (st.st_ino, st.st_mtime_ns)
    known = _FOLDERS.get(path)
    if known is not None and known[0] == key:
        return known[1]
    try:
        names = os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if time.time_ns() - st.st_mtime_ns > _SETTLED_NS:
        _FOLDERS[path] = (key, names)
    return names


def cached_index(store: Store, name: str, stamp: str) -> Any | None:
    """The index cached for ``(store, name)`` if it was read from files with ``stamp``."""
    cached = _CACHE.get((store.uri, name))
    return cached[1] if cached is not None and cached[0] == stamp else None


def cache_index(store: Store, name: str, stamp: str, loaded: Any) -> None:
    """Remember ``loaded`` as index ``name`` of ``store``, read from files with ``stamp``."""
    _CACHE[(store.uri, name)] = (stamp, loaded)


def forget_index(store: Store, name: str) -> None:
    """Drop index ``name`` of ``store`` from the cache (its files changed or are gone)."""
    _CACHE.pop((store.uri, name), None)
