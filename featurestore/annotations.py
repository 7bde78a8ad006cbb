"""Labels CSV files joined onto clip rows (by path, clip_id or name)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa

from .errors import LabelsError
from .schema import ANNOTATION_COLUMNS, MEDIA_COLUMNS

__all__ = ["LabelMatch", "read_labels_csv", "match_labels", "JOIN_COLUMNS", "MAX_TEXT_CHARS",
           "truncate_text_columns", "truncate_text_values"]

log = logging.getLogger(__name__)

#: Longest text value kept per annotation field (labels CSV, ``emofs import annotations``):
#: longer values are cut to this many characters at ingest, with one warning line. A
#: subtitle or description is far shorter; a 10 MB cell (a pasted file, a broken quote)
#: would otherwise slow every listing, search page and summary that shows the column.
MAX_TEXT_CHARS = 4096

#: Columns that say which clip a row describes, in order of preference.
JOIN_COLUMNS = ("path", "clip_id", "name")
_STRING_COLUMNS = {f.name for f in ANNOTATION_COLUMNS} | set(JOIN_COLUMNS)
_RESERVED = {f.name for f in MEDIA_COLUMNS} - {"clip_id", "name"}


@dataclass
class LabelMatch:
    """Result of joining a labels file onto known clips.

    Attributes:
        values: ``{clip_id: {column: value}}`` for every matched row.
        columns: the annotation columns the file carries (Arrow types).
        join_column: which column identified the clips.
        unmatched: CSV rows (1-based line numbers, key) that matched no clip.
        ambiguous: ``name`` keys that matched several clips.
        ignored_columns: columns skipped because emofs derives them from the media.
        duplicates: keys that appeared on several rows (the last row wins).
    """

    values: dict[str, dict[str, Any]]
    columns: list[pa.Field]
    join_column: str
    unmatched: list[tuple[int, str]] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


def read_labels_csv(path: str | Path) -> pa.Table:
    """Read a labels CSV; annotation and key columns as strings, others type-inferred."""
    import polars as pl

    path = Path(path)
    if not path.is_file():
        raise LabelsError(f"labels file {path} does not exist: pass an existing CSV to --labels")
    try:
        header = pl.read_csv(path, n_rows=0).columns
        overrides = {c: pl.Utf8 for c in header if c.strip().lower() in _STRING_COLUMNS}
        frame = pl.read_csv(path, schema_overrides=overrides, infer_schema_length=10_000)
    except (pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
        raise LabelsError(
            f"cannot read labels file {path} as CSV ({str(exc).splitlines()[0]}): "
            "save it as comma-separated UTF-8 with a header row"
        ) from exc
    frame = frame.rename({c: c.strip().lower() for c in frame.columns})
    _join_column(frame.columns, path)
    return truncate_text_columns(frame.to_arrow(), path, keep=JOIN_COLUMNS)


def truncate_text_columns(table: pa.Table, source: str | Path, *, keep: Iterable[str] = ()) -> pa.Table:
    """``table`` with every text value over :data:`MAX_TEXT_CHARS` characters cut to that
    length; one warning line names the columns and how many rows each had cut.

    Args:
        table: rows read from ``source``.
        source: the file, for the warning.
        keep: columns left whole (the keys that say which clip a row is).
    """
    import pyarrow.compute as pc

    cut: dict[str, int] = {}
    for i, fld in enumerate(table.schema):
        if fld.name in keep or not (pa.types.is_string(fld.type) or pa.types.is_large_string(fld.type)):
            continue
        column = table.column(i)
        long = pc.greater(pc.utf8_length(column), MAX_TEXT_CHARS)
        n = int(pc.sum(long).as_py() or 0)
        if n:
            cut[fld.name] = n
            table = table.set_column(i, fld, pc.utf8_slice_codeunits(column, 0, MAX_TEXT_CHARS))
    _warn_cut(cut, source)
    return table


def truncate_text_values(rows: Iterable[dict[str, Any]], source: str | Path) -> None:
    """:func:`truncate_text_columns` for row dicts (changed in place)."""
    cut: dict[str, int] = {}
    for row in rows:
        for key, value in row.items():
            if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
                row[key] = value[:MAX_TEXT_CHARS]
                cut[key] = cut.get(key, 0) + 1
    _warn_cut(cut, source)


def _warn_cut(cut: dict[str, int], source: str | Path) -> None:
    if cut:
        columns = ", ".join(f"{c} ({n} row{'s' if n > 1 else ''})" for c, n in cut.items())
        log.warning(f"{source}: values longer than {MAX_TEXT_CHARS} characters cut to "
                    f"{MAX_TEXT_CHARS}: {columns}")


def _join_column(columns: list[str], csv_path: Path) -> str:
    join = next((c for c in JOIN_COLUMNS if c in columns), None)
    if join is None:
        raise LabelsError(
            f"labels file {csv_path} has none of the columns {', '.join(JOIN_COLUMNS)}: "
            "add one that says which clip each row describes"
        )
    return join


def match_labels(
    table: pa.Table,
    *,
    csv_path: Path,
    roots: Iterable[Path],
    clips: list[dict[str, Any]],
) -> LabelMatch:
    """Join labels rows onto clips.

    Args:
        table: the labels table from :func:`read_labels_csv`.
        csv_path: where the CSV lives (relative ``path`` values may be relative to it).
        roots: the ingested roots (relative ``path`` values are tried against each).
        clips: known clips, each a dict with ``clip_id``, ``uri`` and ``name``.

    Raises:
        LabelsError: the file has no column saying which clip a row describes.
    """
    join = _join_column(table.column_names, csv_path)
    ignored = [c for c in table.column_names if c in _RESERVED and c != join]
    keys_to_drop = set(JOIN_COLUMNS) | set(ignored)
    value_fields = [f for f in table.schema if f.name not in keys_to_drop]

    by_id = {c["clip_id"]: c["clip_id"] for c in clips}
    by_uri = {c["uri"]: c["clip_id"] for c in clips if c.get("uri")}
    by_name: dict[str, list[str]] = {}
    for clip in clips:
        by_name.setdefault(clip["name"], []).append(clip["clip_id"])
    bases = [csv_path.parent.absolute(), *[Path(r).absolute() for r in roots]]

    def lookup(key: str) -> str | list[str] | None:
        if join == "clip_id":
            return by_id.get(key)
        if join == "name":
            found = by_name.get(key) or by_name.get(Path(key).stem)
            return found[0] if found and len(found) == 1 else found
        candidate = Path(key).expanduser()
        options = [candidate] if candidate.is_absolute() else [b / candidate for b in bases]
        for option in options:
            hit = by_uri.get(str(option.resolve()))
            if hit is not None:
                return hit
        return None

    result = LabelMatch({}, value_fields, join, ignored_columns=ignored)
    rows = table.select([join, *[f.name for f in value_fields]]).to_pylist()
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        key = row.pop(join)
        if key is None or str(key).strip() == "":
            result.unmatched.append((line, "<empty>"))
            continue
        hit = lookup(str(key).strip())
        if isinstance(hit, list):
            result.ambiguous.append(str(key))
            continue
        if hit is None:
            result.unmatched.append((line, str(key)))
            continue
        if hit in seen:
            result.duplicates.append(str(key))
        seen.add(hit)
        result.values[hit] = row
    return result
