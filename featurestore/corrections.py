"""Corrections of clip annotations (label, tags) by a person, kept as a history.

Every correction is one row of ``corrections.lance`` (who, when, the column, the value
before and after) and an update of the clip row itself (``clips.lance``), both new Lance
versions, so ``emofs clips`` shows the corrected label at once and the history says who
changed what. An undo is a correction too: it restores the old value and marks the
undone row (``undone_by``), so nothing is ever erased.

The history row is written first, then the clip (then, for an undo, the undone row's
``undone_by``): a crash between the writes leaves a history row the clip does not show
yet, never a changed clip without its row. :func:`history_disagreements` finds such pairs
(``emofs check``) and :func:`reconcile_corrections` completes them (``emofs check
--repair``): a clip still holding the latest row's ``old_value`` gets its ``new_value``
(the write that was cut short is redone: the row is the record of a change that passed
every check under the write lock); a clip whose value changed by another way since (an
``ingest --labels``) keeps it, and a row by ``emofs check --repair`` records the change.

Row schema::

    correction_id  string   uuid hex
    clip_id        string
    column         string   label | tags
    old_value      string   value before (tags: comma-separated)
    new_value      string   value after
    who            string   the name the person typed
    at             timestamp[us, UTC]
    undoes         string   the correction_id this one reverts (null for a plain one)
    undone_by      string   the correction_id that reverted this one (null while it stands)
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Iterable

import pyarrow as pa

from .errors import InputError
from .schema import CLIPS, SCHEMA_VERSION, SCHEMA_VERSION_KEY
from .store import Store, sql_quote

__all__ = [
    "CORRECTIONS",
    "CORRECTABLE",
    "corrections_schema",
    "correct_clip",
    "undo_correction",
    "read_corrections",
    "history_disagreements",
    "reconcile_corrections",
]

CORRECTIONS = "corrections.lance"
#: Clip columns a person may correct.
CORRECTABLE = ("label", "tags")
_MAX_TEXT = 64


def corrections_schema() -> pa.Schema:
    """Arrow schema of ``corrections.lance``."""
    text = pa.string()
    return pa.schema(
        [pa.field("correction_id", text, nullable=False), pa.field("clip_id", text),
         pa.field("column", text), pa.field("old_value", text), pa.field("new_value", text),
         pa.field("who", text), pa.field("at", pa.timestamp("us", tz="UTC")),
         pa.field("undoes", text), pa.field("undone_by", text)],
        metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION)},
    )


def _clean(value: str | None, what: str) -> str:
    if value is not None and not isinstance(value, str):
        raise InputError(f"{what} must be text (got {type(value).__name__})")
    text = (value or "").strip()
    if not text or len(text) > _MAX_TEXT or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InputError(f"{what} must be 1-{_MAX_TEXT} characters on one line (got {value[:40]!r}{'…' if len(value) > 40 else ''})")
    return text


def _current(store: Store, clip_id: str, column: str) -> str | None:
    ds = store.dataset(CLIPS)
    columns = ["clip_id"] + ([column] if ds is not None and column in ds.schema.names else [])
    rows = store.clips(where=f"clip_id = {sql_quote(clip_id)}", columns=columns)
    if not rows.height:
        raise InputError(f"unknown clip {clip_id!r}: list clip ids with `emofs clips`")
    return rows[column][0] if column in rows.columns else None


def _merge_tags(old: str | None, add: Iterable[str]) -> str:
    tags = [t for t in (old or "").split(",") if t]
    for tag in add:
        tag = _clean(tag, "a tag")
        if "," in tag:
            raise InputError(f"a tag may not hold ',' (got {tag!r}): add tags one by one")
        if tag not in tags:
            tags.append(tag)
    return ",".join(tags)


def _write(store: Store, clip_id: str, column: str, old: str | None, new: str | None, who: str,
           undoes: str | None = None) -> dict[str, Any]:
    """The history row, then the clip (a crash between: see :func:`reconcile_corrections`)."""
    row = {"correction_id": uuid.uuid4().hex, "clip_id": clip_id, "column": column,
           "old_value": old, "new_value": new, "who": who, "at": datetime.now(timezone.utc),
           "undoes": undoes, "undone_by": None}
    schema = corrections_schema()
    store.upsert(CORRECTIONS, pa.Table.from_pylist([row], schema=schema), key="correction_id",
                 schema=schema)
    store.upsert_clips(pa.table({"clip_id": [clip_id], column: pa.array([new], pa.string())}))
    return row


def correct_clip(store: Store, clip_id: str, *, who: str, label: str | None = None,
                 tags: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Set a clip's label and/or add tags, recording who did it and when.

    Args:
        store: the store.
        clip_id: the clip to correct.
        who: the name of the person correcting (1-64 characters).
        label: the new label (None: keep it).
        tags: tags to add to the clip's ``tags`` column (kept once each, in order).

    Returns:
        The correction rows written (one per changed column; none when nothing changed).

    Raises:
        InputError: unknown clip, empty name / label / tag, or nothing to change.
    """
    who = _clean(who, "the corrector's name (who)")
    tags = list(tags or [])
    if label is None and not tags:
        raise InputError("nothing to correct: pass a label or at least one tag")
    written = []
    with store.writing():  # read the old value and commit the new one as one step
        if label is not None:
            label = _clean(label, "label")
            old = _current(store, clip_id, "label")
            if old != label:
                written.append(_write(store, clip_id, "label", old, label, who))
        if tags:
            old = _current(store, clip_id, "tags")
            new = _merge_tags(old, tags)
            if new != (old or ""):
                written.append(_write(store, clip_id, "tags", old, new, who))
    return written


def undo_correction(store: Store, correction_id: str, *, who: str) -> dict[str, Any]:
    """Revert one correction: the clip's column gets its old value back.

    Args:
        store: the store.
        correction_id: the correction to revert.
        who: the name of the person undoing it.

    Returns:
        The new correction row (``undoes`` = ``correction_id``).

    Raises:
        InputError: no such correction, it was already undone, or the clip's value has
            changed since (correct it again instead).
    """
    who = _clean(who, "the corrector's name (who)")
    with store.writing():
        found = read_corrections(store, where=f"correction_id = {sql_quote(correction_id)}")
        if not found.height:
            raise InputError(f"no correction {correction_id!r}: list them with GET /api/corrections")
        row = found.to_dicts()[0]
        if row["undone_by"]:
            raise InputError(f"correction {correction_id} was already undone by {row['undone_by']}")
        now = _current(store, row["clip_id"], row["column"])
        if now != row["new_value"]:
            raise InputError(
                f"clip {row['clip_id']!r} {row['column']} is {now!r} now, not {row['new_value']!r}: "
                "it changed since; correct it again instead of undoing")
        undo = _write(store, row["clip_id"], row["column"], now, row["old_value"], who,
                      undoes=correction_id)
        store.upsert(CORRECTIONS, pa.table({"correction_id": [correction_id],
                                            "undone_by": [undo["correction_id"]]}),
                     key="correction_id")
    return undo


def read_corrections(store: Store, where: str | None = None):
    """Correction rows as a polars DataFrame, newest first (empty when there are none)."""
    import polars as pl

    table = store.table(CORRECTIONS, where=where) if store.dataset(CORRECTIONS) is not None else None
    frame = pl.from_arrow(table if table is not None else corrections_schema().empty_table())
    return frame.sort("at", descending=True)


#: ``who`` of the rows :func:`reconcile_corrections` writes.
REPAIR_WHO = "emofs check --repair"


def _same(a: str | None, b: str | None) -> bool:
    return (a or "") == (b or "")  # an empty tags value is stored as null or ""


def history_disagreements(store: Store) -> list[dict[str, Any]]:
    """Where the corrections history and the clips disagree (what a crash between the writes
    of a correction leaves); changes nothing.

    Returns:
        One dict per problem: ``kind`` (``unapplied``: the clip still holds the latest
        correction's old value; ``changed``: the clip holds a value the history never set;
        ``undo_unmarked``: an undo whose undone row has no ``undone_by``), ``clip_id``,
        ``column``, ``correction_id`` (the latest row; the undone row for ``undo_unmarked``),
        ``history`` (the value the history says), ``clip`` (the clip's value) and, for
        ``undo_unmarked``, ``undo_id``.
    """
    rows = read_corrections(store)
    if not rows.height:
        return []
    out: list[dict[str, Any]] = []
    by_id = {r["correction_id"]: r for r in rows.to_dicts()}
    for row in by_id.values():
        undone = by_id.get(row["undoes"]) if row["undoes"] else None
        if undone is not None and not undone["undone_by"]:
            out.append({"kind": "undo_unmarked", "clip_id": undone["clip_id"], "column": undone["column"],
                        "correction_id": undone["correction_id"], "undo_id": row["correction_id"],
                        "history": row["new_value"], "clip": None})
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows.sort(["at", "correction_id"]).to_dicts():  # oldest first: the last one wins
        latest[(row["clip_id"], row["column"])] = row
    ds = store.dataset(CLIPS)
    have = set(ds.schema.names) if ds is not None else set()
    columns = sorted({c for _, c in latest if c in have})
    clips = store.clips(columns=["clip_id", *columns]).to_dicts() if ds is not None else []
    values = {r["clip_id"]: r for r in clips}
    for (clip_id, column), row in sorted(latest.items()):
        if clip_id not in values:
            continue  # the clip is gone: nothing to disagree with
        now = values[clip_id].get(column)
        if _same(now, row["new_value"]):
            continue
        out.append({"kind": "unapplied" if _same(now, row["old_value"]) else "changed",
                    "clip_id": clip_id, "column": column, "correction_id": row["correction_id"],
                    "history": row["new_value"], "clip": now})
    return out


def reconcile_corrections(store: Store) -> dict[str, int]:
    """Make the history and the clips agree again (``emofs check --repair``).

    ``unapplied``: the clip gets the latest correction's new value (the cut-short write is
    redone); ``changed``: the clip keeps its value and a correction row (who ``emofs check
    --repair``) records it; ``undo_unmarked``: the undone row gets its ``undone_by``.

    Returns:
        ``{"rolled_forward": n, "recorded": n, "undos_marked": n}``.
    """
    done = {"rolled_forward": 0, "recorded": 0, "undos_marked": 0}
    with store.writing():
        problems = history_disagreements(store)
        marks = [p for p in problems if p["kind"] == "undo_unmarked"]
        if marks:
            store.upsert(CORRECTIONS, pa.table({"correction_id": [p["correction_id"] for p in marks],
                                                "undone_by": [p["undo_id"] for p in marks]}),
                         key="correction_id")
            done["undos_marked"] = len(marks)
        for column in sorted({p["column"] for p in problems if p["kind"] == "unapplied"}):
            fix = [p for p in problems if p["kind"] == "unapplied" and p["column"] == column]
            store.upsert_clips(pa.table({"clip_id": [p["clip_id"] for p in fix],
                                         column: pa.array([p["history"] for p in fix], pa.string())}))
            done["rolled_forward"] += len(fix)
        changed = [p for p in problems if p["kind"] == "changed"]
        if changed:
            now = datetime.now(timezone.utc)
            rows = [{"correction_id": uuid.uuid4().hex, "clip_id": p["clip_id"], "column": p["column"],
                     "old_value": p["history"], "new_value": p["clip"], "who": REPAIR_WHO, "at": now,
                     "undoes": None, "undone_by": None} for p in changed]
            schema = corrections_schema()
            store.upsert(CORRECTIONS, pa.Table.from_pylist(rows, schema=schema), key="correction_id",
                         schema=schema)
            done["recorded"] = len(changed)
    return done
