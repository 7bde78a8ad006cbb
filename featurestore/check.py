"""`emofs check`: find (and with ``--repair`` fix) what a crash or a race can leave behind.

What is checked:

- duplicate keys in every dataset (``clip_id`` in clips, features and predictions,
  ``error_key`` in errors): two writers racing an upsert, or an interrupted import, can
  store a key twice, and readers then count or train on a clip twice;
- orphan rows: feature or prediction rows whose clip is not in ``clips.lance``;
- indexes whose files do not match their manifest: a missing file, a byte that changed
  since the build (sha256 in the manifest), row counts that disagree with the id map.
- feature rows whose vector (or tokens, where cheap) hold NaN or inf (written by an older
  emofs or another tool): ``--repair`` quarantines them (:mod:`featurestore.finite`) and
  rebuilds the indexes over those sets;
- a corrections history that disagrees with the clips (a crash between a correction's
  history row and its clip update): see :func:`featurestore.corrections.reconcile_corrections`
  for what ``--repair`` does (rolls the correction forward, or records a later change).

:func:`repair_store` fixes them under the store's write lock: of each duplicated key it
keeps the newest row (the latest timestamp where the dataset has one: ``ingested_at``,
``predicted_at``, ``at``; for features the row with the current spec fingerprint; then the
highest row address) and deletes the others in one commit per dataset; it deletes orphan
rows (unless ``clips.lance`` is empty, which means the clips are what is missing); and it
rebuilds a damaged index with the command its manifest names. Deleted rows stay readable
in the dataset's previous Lance version until ``emofs vacuum``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .errors import EmofsError, IndexCorruptError
from .features import features_name
from .inventory import FINGERPRINT_KEY
from .predictions import predictions_name
from .schema import CLIPS, ERRORS, INDEX_DIR
from .store import Store

__all__ = ["CheckReport", "check_store", "repair_store"]

log = logging.getLogger(__name__)

_EXAMPLES = 5
#: The newest of a duplicated key is the row with the latest value of this column.
_TIME_COLUMNS = ("ingested_at", "predicted_at", "at")


@dataclass
class CheckReport:
    """What :func:`check_store` found (and, after :func:`repair_store`, what it fixed).

    Attributes:
        store: the store's uri.
        rows: rows checked per dataset.
        duplicates: ``{dataset: {"keys": n, "extra_rows": m, "examples": [...]}}``.
        orphans: ``{dataset: {"rows": n, "examples": [clip ids]}}``.
        indexes: ``{index name: why it cannot be trusted}``.
        repaired: what a repair did (empty after a plain check): ``duplicate_rows_removed``
            and ``orphan_rows_removed`` per dataset, ``indexes_rebuilt``, ``notes``.
    """

    store: str
    rows: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, dict[str, Any]] = field(default_factory=dict)
    orphans: dict[str, dict[str, Any]] = field(default_factory=dict)
    indexes: dict[str, str] = field(default_factory=dict)
    repaired: dict[str, Any] = field(default_factory=dict)
    corrections: list[dict[str, Any]] = field(default_factory=list)  # history vs clips
    nonfinite: dict[str, dict[str, Any]] = field(default_factory=dict)  # NaN/inf feature rows

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not (self.duplicates or self.orphans or self.indexes or self.corrections or self.nonfinite)

    def problems(self) -> list[str]:
        """One line per problem, each saying what is wrong and how to fix it."""
        lines = []
        for name, dup in self.duplicates.items():
            lines.append(f"{name}: {dup['keys']} keys stored more than once ({dup['extra_rows']} extra "
                         f"rows, e.g. {', '.join(map(str, dup['examples']))}): run `emofs check --repair`")
        for name, orphan in self.orphans.items():
            lines.append(f"{name}: {orphan['rows']} rows whose clip is not in clips.lance (e.g. "
                         f"{', '.join(map(str, orphan['examples']))}): run `emofs check --repair`")
        for name, why in self.indexes.items():
            lines.append(f"index {name}: {why}")
        lines.extend(_correction_lines(self.corrections))
        lines.extend(_nonfinite_lines(self.nonfinite))
        return lines

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (``emofs check --json``)."""
        return {"store": self.store, "ok": self.ok, "rows": self.rows, "duplicates": self.duplicates,
                "orphans": self.orphans, "indexes": self.indexes, "corrections": self.corrections,
                "nonfinite": _nonfinite_summary(self.nonfinite), "problems": self.problems(),
                "repaired": self.repaired}


def check_store(store: Store) -> CheckReport:
    """Look for duplicate keys, orphan rows and damaged indexes; changes nothing.

    Args:
        store: the store to check.

    Returns:
        A :class:`CheckReport` (``report.ok`` when nothing is wrong).
    """
    report = CheckReport(store.uri)
    clip_ids = None
    for name, key in _datasets(store):
        table = store.table(name, columns=[key])
        if table is None:
            continue
        report.rows[name] = table.num_rows
        keys = table.column(key)
        counts = pc.value_counts(keys.drop_null())
        repeated = counts.filter(pc.greater(counts.field("counts"), 1))
        if len(repeated):
            report.duplicates[name] = {
                "keys": len(repeated),
                "extra_rows": int(pc.sum(repeated.field("counts")).as_py()) - len(repeated),
                "examples": repeated.field("values")[:_EXAMPLES].to_pylist()}
        if name == CLIPS:
            clip_ids = keys
        elif key == "clip_id" and name != ERRORS:
            stray = keys.filter(pc.invert(pc.is_in(keys, value_set=_unique(clip_ids))))
            if len(stray):
                report.orphans[name] = {"rows": len(stray), "examples": stray[:_EXAMPLES].to_pylist()}
    for name in _index_names(store):
        why = _index_problem(store, name)
        if why:
            report.indexes[name] = why
    report.corrections = _correction_problems(store)
    report.nonfinite = _find_nonfinite(store)
    return report


def repair_store(store: Store) -> CheckReport:
    """Fix what :func:`check_store` finds, under the store's write lock.

    Duplicate keys keep their newest row; orphan feature and prediction rows are deleted
    (kept, with a note, when ``clips.lance`` is empty or missing); damaged indexes are
    rebuilt from their manifest's encoders and weights.

    Returns:
        The report of a check run after the repair (``ok`` when everything was fixed),
        with ``repaired`` saying what was done.

    Raises:
        StoreError: the store is not writable (before anything is changed).
    """
    store.check_writable()
    removed: dict[str, int] = {}
    orphans_removed: dict[str, int] = {}
    rebuilt: dict[str, str] = {}
    notes: list[str] = []
    with store.writing():
        before = check_store(store)
        keys = dict(_datasets(store))
        for name in before.duplicates:
            removed[name] = _drop_duplicates(store, name, keys[name])
        if before.orphans and not before.rows.get(CLIPS):
            notes.append("orphan rows kept: clips.lance is empty or missing (re-ingest the media "
                         "or import the clips first)")
        elif before.orphans:
            clips = store.table(CLIPS, columns=["clip_id"]).column("clip_id")
            for name in before.orphans:
                orphans_removed[name] = _drop_orphans(store, name, clips)
        quarantined, stale = _quarantine_nonfinite(store, before.nonfinite)
        for name in sorted(set(before.indexes) | stale):
            outcome = _rebuild_index(store, name)
            if outcome is None:
                rebuilt[name] = "rebuilt"
            else:
                notes.append(f"index {name} not rebuilt: {outcome}")
        corrections = _reconcile_corrections(store) if before.corrections else {}
        after = check_store(store)
    after.repaired = {"duplicate_rows_removed": removed, "orphan_rows_removed": orphans_removed,
                      "indexes_rebuilt": sorted(rebuilt), "notes": notes, "corrections": corrections,
                      "nonfinite_rows_quarantined": quarantined}
    for line in notes:
        log.warning(line)
    return after


# ---------------------------------------------------------------------- NaN / inf
def _find_nonfinite(store: Store) -> dict[str, dict[str, Any]]:
    from .finite import find_nonfinite

    return find_nonfinite(store)


def _nonfinite_lines(found: dict[str, dict[str, Any]]) -> list[str]:
    from .finite import nonfinite_lines

    return nonfinite_lines(found)


def _nonfinite_summary(found: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    from .finite import nonfinite_summary

    return nonfinite_summary(found)


def _quarantine_nonfinite(store: Store, found: dict[str, dict[str, Any]]) -> tuple[dict[str, int], set[str]]:
    """Quarantine the NaN/inf rows (:func:`featurestore.finite.repair_nonfinite`); returns the
    rows removed per set and the indexes built over those sets (rebuilt without them)."""
    if not found:
        return {}, set()
    from .finite import repair_nonfinite
    from .index import read_manifest

    removed = repair_nonfinite(store, found)
    stale = set()
    for name in _index_names(store):
        try:
            encoders = (read_manifest(store, name) or {}).get("encoders") or []
        except IndexCorruptError:
            continue  # damaged: check_store lists it and the repair rebuilds it anyway
        if set(encoders) & set(found):
            stale.add(name)
    return removed, stale


# ----------------------------------------------------------------------- datasets
def _datasets(store: Store) -> list[tuple[str, str]]:
    """``(dataset, key column)`` of every dataset, clips first (orphans are checked against it)."""
    return ([(CLIPS, "clip_id"), (ERRORS, "error_key")]
            + [(features_name(n), "clip_id") for n in store.feature_sets()]
            + [(predictions_name(n), "clip_id") for n in store.prediction_runs()])


def _unique(keys) -> pa.Array:
    if keys is None:
        return pa.array([], pa.string())
    return pc.unique(keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys)


def _drop_duplicates(store: Store, name: str, key: str) -> int:
    """Delete all but the newest row of every duplicated key in one commit; rows removed."""
    ds = store.dataset(name)
    names = ds.schema.names
    when = next((c for c in _TIME_COLUMNS if c in names), None)
    columns = [key] + ([when] if when else []) + (["fingerprint"] if "fingerprint" in names else [])
    table = ds.to_table(columns=columns, with_row_address=True)
    counts = pc.value_counts(table.column(key).drop_null())
    repeated = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
    table = table.filter(pc.is_in(table.column(key), value_set=repeated))  # only what to sort out
    current = (ds.schema.metadata or {}).get(FINGERPRINT_KEY.encode(), b"").decode()
    best: dict[Any, tuple] = {}
    drop: list[int] = []
    for row in table.to_pylist():
        stamp = row[when].timestamp() if when and row[when] is not None else float("-inf")
        rank = (stamp, bool(current) and row.get("fingerprint") == current, row["_rowaddr"])
        held = best.get(row[key])
        if held is None:
            best[row[key]] = rank
            continue
        newer, older = (rank, held) if rank > held else (held, rank)
        best[row[key]] = newer
        drop.append(older[2])
    if drop:
        ds.delete(f"_rowaddr IN ({', '.join(str(a) for a in drop)})")
    log.info("%s: removed %d duplicate rows", name, len(drop))
    return len(drop)


def _drop_orphans(store: Store, name: str, clip_ids) -> int:
    """Delete the rows of ``name`` whose clip_id is not in ``clip_ids``; rows removed."""
    ds = store.dataset(name)
    table = ds.to_table(columns=["clip_id"], with_row_address=True)
    stray = table.filter(pc.invert(pc.is_in(table.column("clip_id"), value_set=_unique(clip_ids))))
    addresses = stray.column("_rowaddr").to_pylist()
    if addresses:
        ds.delete(f"_rowaddr IN ({', '.join(str(a) for a in addresses)})")
    return len(addresses)


# -------------------------------------------------------------------- corrections
def _correction_problems(store: Store) -> list[dict[str, Any]]:
    from .corrections import history_disagreements

    return history_disagreements(store)


def _reconcile_corrections(store: Store) -> dict[str, int]:
    from .corrections import reconcile_corrections

    return reconcile_corrections(store)


def _correction_lines(problems: list[dict[str, Any]]) -> list[str]:
    """One line per kind of disagreement between corrections.lance and the clips."""
    lines = []
    for kind, what in (("unapplied", "corrections the clips do not show (a write cut short: "
                                     "--repair gives the clips the corrected values)"),
                       ("changed", "clips changed since their last correction by another way "
                                   "(--repair records their current values in the history)"),
                       ("undo_unmarked", "undone corrections not marked undone (--repair marks them)")):
        found = [p for p in problems if p["kind"] == kind]
        if found:
            examples = ", ".join(f"{p['clip_id']} {p['column']} is {p['clip']!r}, history {p['history']!r}"
                                 if kind != "undo_unmarked" else p["correction_id"] for p in found[:_EXAMPLES])
            lines.append(f"corrections.lance: {len(found)} {what}, e.g. {examples}: run `emofs check --repair`")
    return lines


# ------------------------------------------------------------------------ indexes
def _index_names(store: Store) -> list[str]:
    """Every index the store has a ``.faiss`` file or a manifest of."""
    import pyarrow.fs as pafs
    from pathlib import PurePosixPath

    fs, root = pafs.FileSystem.from_uri(store.path(INDEX_DIR))
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    names = set()
    for info in infos:
        path = PurePosixPath(info.path)
        if info.type == pafs.FileType.File and path.suffix in (".faiss", ".json"):
            names.add(path.stem)
    return sorted(names)


def _index_problem(store: Store, name: str) -> str | None:
    from .index.load import verify_index

    return verify_index(store, name)


def _rebuild_index(store: Store, name: str) -> str | None:
    """Rebuild index ``name`` as its manifest describes; None when done, else why not."""
    from .index import IndexConfig, build_index, read_manifest

    try:
        manifest = read_manifest(store, name)
    except IndexCorruptError as exc:
        return str(exc)
    if not manifest or not manifest.get("encoders"):
        return "its manifest is missing: rebuild it with `emofs index build --encoder ENCODER " \
               f"--name {name} --rebuild`"
    params = manifest.get("params") or {}
    try:
        config = IndexConfig(list(manifest["encoders"]), manifest.get("weights"),
                             kind=params.get("requested_kind", "auto"), name=name,
                             recall=params.get("recall_target", 0.95), rebuild=True,
                             standardize=manifest.get("standardize") is not None)
        build_index(store, config, progress=False)
    except EmofsError as exc:
        return str(exc)
    return None
