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

    Ids handed out but not yet committed are claims: before each batch commit the caller
    (under the store's write lock) passes the rows committed meanwhile, by itself or by
    another process, to :meth:`sync`, then asks :meth:`allocate` again. A claim on an id
    that another file's committed row now holds is dropped, so the file gets the next
    candidate instead of overwriting that row.

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

    def sync(self, committed: dict[str, str | None]) -> None:
        """Take in ``{clip_id: uri}`` of every row now committed in the store.

        Committed rows win over this allocator's uncommitted claims: a claimed id held by
        another file loses its claim (the next :meth:`allocate` of that file picks another
        id), and a file committed under another id keeps that id. Claims on rows without
        media (``uri`` None, taken over by :meth:`adopt`) are kept.
        """
        for clip_id, uri in committed.items():
            claimant = self._uri_by_id.get(clip_id)
            if uri is None:
                if claimant is None:
                    self._uri_by_id[clip_id] = None
                continue
            if claimant is not None and claimant != uri and self._id_by_uri.get(claimant) == clip_id:
                del self._id_by_uri[claimant]  # another file committed this id first
            earlier = self._id_by_uri.get(uri)
            if earlier is not None and earlier != clip_id and self._uri_by_id.get(earlier) == uri:
                del self._uri_by_id[earlier]  # this file is committed under another id
            self._uri_by_id[clip_id] = uri
            self._id_by_uri[uri] = clip_id

    def adopt(self, clip_id: str, uri: str) -> str:
        """Give the file at ``uri`` an existing row that has no media yet (imported rows)."""
        return self._claim(clip_id, uri)

    def _claim(self, clip_id: str, uri: str) -> str:
        self._uri_by_id[clip_id] = uri
        self._id_by_uri[uri] = clip_id
        return clip_id
