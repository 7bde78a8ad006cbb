"""Index files inside the store: paths, byte I/O through the store's filesystem, manifest.

Layout inside the store::

    <store>/index/<name>.faiss        the serialised FAISS index (row i = id i)
    <store>/index/<name>.ids.parquet  row -> clip_id map (one string column, in id order)
    <store>/index/<name>.json         manifest: kind, params, encoders + weights, the
                                      feature-set fingerprints / versions it was built
                                      from, row count, store version, built_at, and the
                                      sha256 of the two files above (``checksums``)

Files are written through ``pyarrow.fs`` so a store on an object-store URI works too. The
per-process cache of loaded indexes lives here too, so that every module that rewrites or
deletes the files can invalidate it.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from ..errors import IndexCorruptError, InputError
from ..remote import filesystem
from ..schema import INDEX_DIR
from ..store import Store

__all__ = [
    "index_paths",
    "check_index_name",
    "read_bytes",
    "write_bytes",
    "delete_file",
    "file_stamp",
    "checksum",
    "checksum_problem",
    "read_manifest",
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
    """Write ``data`` to ``rel`` in the store (through a temporary file, then a move)."""
    fs, path = _fs(store, rel)
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    tmp = f"{path}.tmp"
    with fs.open_output_stream(tmp) as handle:
        handle.write(data)
    fs.move(tmp, path)


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
