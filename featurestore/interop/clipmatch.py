"""Map the clip names Emotion-LLaMA / MER use onto the store's clip ids.

Both formats key a clip by its file stem (``sample_00000047``). A name maps to the clip
whose ``name`` column equals it (or a clip without a name whose ``clip_id`` equals it). A name
held by several clips (``a.mp4`` and ``a.wav``) is ambiguous and skipped unless the
caller narrows the candidates with a ``--where`` filter. Clips that are not in the store
yet can be created as rows without media (``has_media = False``, ``clip_id = name``, or
``name~2`` when that id is already taken by another file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable

import pyarrow as pa

from ..schema import CLIPS
from ..store import Store

__all__ = ["NameMatch", "ClipResolver"]


@dataclass
class NameMatch:
    """Result of resolving names.

    Attributes:
        ids: ``{name: clip_id}`` for every name that maps to exactly one clip.
        unmatched: names that map to no clip (in input order).
        ambiguous: ``{name: [clip_id, ...]}`` for names held by several clips.
        created: clip ids of the rows created for unmatched names.
    """

    ids: dict[str, str] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    ambiguous: dict[str, list[str]] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)


class ClipResolver:
    """Resolves clip names against one store (read once, at construction).

    Args:
        store: the store.
        where: optional SQL filter on clip columns restricting the candidates (for
            example ``"modality = 'audio+video'"`` when mp4 and wav share a stem).
    """

    def __init__(self, store: Store, where: str | None = None):
        self.store = store
        self.where = where
        table = store.table(CLIPS, columns=["clip_id", "name"])
        self._all_ids: set[str] = set() if table is None else set(table.column("clip_id").to_pylist())
        self._all_names: set[str] = set() if table is None else set(table.column("name").to_pylist())
        if where:
            table = store.table(CLIPS, columns=["clip_id", "name"], where=where)
        self._by_name: dict[str, list[str]] = {}
        self._ids: set[str] = set()
        self._nameless: set[str] = set()
        for row in ([] if table is None else table.to_pylist()):
            self._ids.add(row["clip_id"])
            if row["name"] is not None:
                self._by_name.setdefault(row["name"], []).append(row["clip_id"])
            else:
                self._nameless.add(row["clip_id"])

    @property
    def has_clips(self) -> bool:
        """Whether the store (under the filter) holds any clip."""
        return bool(self._ids)

    def knows_any(self, names: Iterable[str]) -> bool:
        """Whether any of ``names`` is a clip name in the store (ignoring ``where``)."""
        return any(n in self._all_names for n in names)

    def resolve(self, names: Iterable[str]) -> NameMatch:
        """Map each name to a clip id (see the module docstring for the rules)."""
        result = NameMatch()
        for name in names:
            hits = self._by_name.get(name)
            if hits is None and name in self._nameless:
                hits = [name]
            if not hits:
                result.unmatched.append(name)
            elif len(hits) > 1:
                result.ambiguous[name] = sorted(hits)
            else:
                result.ids[name] = hits[0]
        return result

    def create(self, match: NameMatch, names: Iterable[str] | None = None) -> None:
        """Create no-media rows for ``names`` (default: all unmatched) and map them."""
        todo = list(match.unmatched if names is None else names)
        if not todo:
            return
        now = datetime.now(timezone.utc)
        rows = []
        for name in dict.fromkeys(todo):
            clip_id = self._free_id(name)
            self._all_ids.add(clip_id)
            self._all_names.add(name)
            self._ids.add(clip_id)
            self._by_name.setdefault(name, []).append(clip_id)
            rows.append({"clip_id": clip_id, "name": name, "has_media": False, "ingested_at": now})
            match.ids[name] = clip_id
            match.created.append(clip_id)
        created = set(todo)
        match.unmatched = [n for n in match.unmatched if n not in created]
        schema = pa.schema([
            pa.field("clip_id", pa.string(), nullable=False),
            pa.field("name", pa.string()),
            pa.field("has_media", pa.bool_()),
            pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
        ])
        for start in range(0, len(rows), 50_000):
            self.store.upsert_clips(pa.Table.from_pylist(rows[start : start + 50_000], schema=schema))

    def _free_id(self, name: str) -> str:
        if name not in self._all_ids:
            return name
        n = 2
        while f"{name}~{n}" in self._all_ids:
            n += 1
        return f"{name}~{n}"
