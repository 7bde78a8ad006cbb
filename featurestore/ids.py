"""Stable clip ids: the path relative to the ingested root, disambiguated on a clash."""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

__all__ = ["ClipIdAllocator"]


class ClipIdAllocator:
    """Hands out clip ids that never collide and never move.

    A file already in the store keeps its id (found by its absolute ``uri``). A new file
    gets its path relative to the ingested root (``folder/a.mp4``); if another file already
    holds that id, the root's folder name is prefixed (``rootB/folder/a.mp4``), and if that
    is taken too, a short hash of the root is appended. Ids are therefore unique within the
    store and stable across re-ingests of the same files.

    Args:
        existing: ``{clip_id: uri}`` of the rows already in the store.
    """

    def __init__(self, existing: dict[str, str | None]):
        self._uri_by_id: dict[str, str | None] = dict(existing)
        self._id_by_uri: dict[str, str] = {u: c for c, u in existing.items() if u}

    def allocate(self, uri: str, root: Path, rel_path: str) -> str:
        """The clip id for the file at ``uri`` (``rel_path`` relative to ``root``)."""
        known = self._id_by_uri.get(uri)
        if known is not None:
            return known
        rel = PurePosixPath(rel_path).as_posix()
        root_hash = hashlib.sha1(str(root).encode()).hexdigest()[:8]
        for candidate in (rel, f"{root.name}/{rel}", f"{rel}~{root_hash}"):
            holder = self._uri_by_id.get(candidate, uri)
            if holder == uri:
                return self._claim(candidate, uri)
        n = 2
        while f"{rel}~{root_hash}-{n}" in self._uri_by_id:
            n += 1
        return self._claim(f"{rel}~{root_hash}-{n}", uri)

    def adopt(self, clip_id: str, uri: str) -> str:
        """Give the file at ``uri`` an existing row that has no media yet (imported rows)."""
        return self._claim(clip_id, uri)

    def _claim(self, clip_id: str, uri: str) -> str:
        self._uri_by_id[clip_id] = uri
        self._id_by_uri[uri] = clip_id
        return clip_id
