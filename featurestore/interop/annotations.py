"""Annotation files of Emotion-LLaMA and the MER challenges onto clip rows.

Formats (as the public repositories write and read them):

``emotion-llama-txt``
    Whitespace-separated lines, ``name label`` or ``name frames label [valence]``
    (``sample_00000047 22 surprise -0.61``). ``frames`` is the number of face frames
    OpenFace extracted; valence -10 means unknown. (Emotion-LLaMA ``first_face.py``
    takes ``fields[0]`` and ``fields[2]``; its dataset docs name the forms ``N E`` and
    ``N C E [V]``.)
``mer-csv``
    MER2023/2024 label CSVs: ``name,discrete,valence`` (MERTools ``write_to_csv_pred``
    / ``report_results_on_test1_test2``).
``transcripts``
    ``name,sentence`` (Emotion-LLaMA ``transcription_en_all.csv``) or
    ``name,chinese,english`` (MERTools ``subtitle_chieng.csv``).
``merr-json``
    MERR annotations: one object keyed by clip name; fine-grained entries carry
    ``smp_reason_caption``, coarse ones ``caption``; some carry ``peak_index`` (a string
    or number).

Columns written: ``label``, ``valence``, ``arousal``, ``frames``, ``subtitle``,
``subtitle_zh``, ``description``, ``peak_frame``. Unreadable lines/entries are skipped
one by one with their line number (and recorded in ``errors.lance``); names not in the
store become clip rows without media.
"""

from __future__ import annotations

import logging
import csv
import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa

from ..annotations import truncate_text_values
from ..errors import InputError, LabelsError
from ..schema import CLIPS
from ..store import Store
from .clipmatch import ClipResolver

log = logging.getLogger(__name__)

__all__ = [
    "ANNOTATION_FORMATS",
    "AnnotationRow",
    "ParsedAnnotations",
    "AnnotationImportReport",
    "detect_format",
    "read_annotations",
    "import_annotations",
    "write_annotation_txt",
    "write_transcripts_csv",
    "EMOTION_LLAMA_LABELS",
]

ANNOTATION_FORMATS = ("auto", "emotion-llama-txt", "mer-csv", "transcripts", "merr-json")
#: The nine labels Emotion-LLaMA's loaders accept.
EMOTION_LLAMA_LABELS = (
    "neutral", "angry", "happy", "sad", "worried", "surprise", "fear", "contempt", "doubt",
)
#: Valence MER and Emotion-LLaMA files use for "unknown".
UNKNOWN_VALENCE = -10.0
_TYPES: dict[str, pa.DataType] = {
    "label": pa.string(),
    "valence": pa.float64(),
    "arousal": pa.float64(),
    "frames": pa.int64(),
    "subtitle": pa.string(),
    "subtitle_zh": pa.string(),
    "description": pa.string(),
    "peak_frame": pa.int32(),
}
# CSV column -> clip column (lower-cased headers).
_CSV_COLUMNS = {
    "discrete": "label",
    "valence": "valence",
    "arousal": "arousal",
    "sentence": "subtitle",
    "sentence_en": "subtitle",
    "english": "subtitle",
    "chinese": "subtitle_zh",
}
_EXAMPLES = 5


@dataclass
class AnnotationRow:
    """One annotated clip: its name, the line it came from, and its values."""

    line: int
    name: str
    values: dict[str, Any]


@dataclass
class ParsedAnnotations:
    """Rows read from an annotation file and the lines that could not be read."""

    format: str
    rows: list[AnnotationRow] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class AnnotationImportReport:
    """What importing an annotation file did.

    Attributes:
        file, format: the file and its (detected) format.
        rows: annotated rows read.
        annotated: clips whose rows were written.
        created: clip rows created (no media) for names the store did not know.
        columns: clip columns written.
        skipped: ``(line, reason)`` for unreadable lines/entries.
        unmatched: names left out (only with ``create_missing=False``).
        ambiguous: names held by several clips (narrow with ``--where``).
        duplicates: names that appeared more than once (the last one wins).
        version: clips.lance version after the import.
    """

    file: str
    format: str
    rows: int = 0
    annotated: int = 0
    created: int = 0
    columns: list[str] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    version: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {
            "file": self.file,
            "format": self.format,
            "rows": self.rows,
            "annotated": self.annotated,
            "created_clips": self.created,
            "columns": self.columns,
            "skipped": len(self.skipped),
            "skipped_examples": [{"line": n, "reason": r} for n, r in self.skipped[:_EXAMPLES]],
            "unmatched": len(self.unmatched),
            "unmatched_examples": self.unmatched[:_EXAMPLES],
            "ambiguous": len(self.ambiguous),
            "ambiguous_examples": self.ambiguous[:_EXAMPLES],
            "duplicates": len(self.duplicates),
            "version": self.version,
        }


# ----------------------------------------------------------------------- reading
def detect_format(path: str | os.PathLike, fmt: str = "auto") -> str:
    """Pick the format of an annotation file (by extension, then CSV header).

    Raises:
        InputError: unknown ``--format``, or a file whose format cannot be told.
    """
    if fmt not in ANNOTATION_FORMATS:
        raise InputError(f"--format must be one of {', '.join(ANNOTATION_FORMATS)} (got {fmt!r})")
    if fmt != "auto":
        return fmt
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "merr-json"
    if suffix == ".csv":
        header = [h.lower() for h in _csv_header(path)]
        if "discrete" in header:
            return "mer-csv"
        if {"sentence", "sentence_en", "english", "chinese"} & set(header):
            return "transcripts"
        raise InputError(
            f"cannot tell the format of {path}: its header ({', '.join(header)}) has neither "
            "'discrete' (MER labels) nor 'sentence'/'english'/'chinese' (transcripts); pass --format"
        )
    if suffix in (".txt", ".lst", ""):
        return "emotion-llama-txt"
    raise InputError(
        f"cannot tell the format of {path} from its extension: pass --format "
        f"({', '.join(ANNOTATION_FORMATS[1:])})"
    )


def read_annotations(path: str | os.PathLike, fmt: str = "auto") -> ParsedAnnotations:
    """Read an annotation file; bad lines become ``errors`` (line, reason), not exceptions.

    Raises:
        LabelsError: the file is missing, not UTF-8, not JSON at all, or lacks the
            columns its format needs.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise LabelsError(f"annotation file {path} does not exist: pass an existing file")
    fmt = detect_format(path, fmt)
    if fmt == "emotion-llama-txt":
        return _read_txt(path)
    if fmt == "merr-json":
        return _read_merr_json(path)
    return _read_csv(path, fmt)


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabelsError(
            f"{path} is not UTF-8 text (byte {exc.start}): save it as UTF-8"
        ) from exc


def _read_txt(path: Path) -> ParsedAnnotations:
    parsed = ParsedAnnotations("emotion-llama-txt")
    for number, line in enumerate(_text(path).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) == 2:
            parsed.rows.append(AnnotationRow(number, fields[0], {"label": fields[1]}))
            continue
        if len(fields) not in (3, 4):
            parsed.errors.append(
                (number, f"{len(fields)} fields: expected 'name label' or 'name frames label [valence]'")
            )
            continue
        values: dict[str, Any] = {"label": fields[2]}
        try:
            frames = int(fields[1])
            if frames < 0:
                raise ValueError
            values["frames"] = frames
        except ValueError:
            parsed.errors.append((number, f"frames {fields[1]!r} is not a non-negative integer"))
            continue
        if len(fields) == 4:
            valence = _float(fields[3])
            if valence is None:
                parsed.errors.append((number, f"valence {fields[3]!r} is not a number"))
                continue
            values["valence"] = None if valence == UNKNOWN_VALENCE else valence
        parsed.rows.append(AnnotationRow(number, fields[0], values))
    return parsed


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return [h.strip() for h in next(csv.reader(handle), [])]
    except UnicodeDecodeError as exc:
        raise LabelsError(f"{path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from exc


def _read_csv(path: Path, fmt: str) -> ParsedAnnotations:
    text = _text(path)
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, len(text) + 1))  # a long field is cut on import, not a parse error
    try:
        return _parse_csv(path, fmt, text)
    finally:
        csv.field_size_limit(limit)


def _parse_csv(path: Path, fmt: str, text: str) -> ParsedAnnotations:
    parsed = ParsedAnnotations(fmt)
    reader = csv.reader(text.splitlines(keepends=True))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise LabelsError(f"{path} is empty: expected a header row starting with 'name'") from None
    if "name" not in header:
        raise LabelsError(
            f"{path} has no 'name' column (header: {', '.join(header)}): MER and Emotion-LLaMA "
            "CSVs key clips by name"
        )
    needed = {"mer-csv": ("discrete",), "transcripts": ("sentence", "sentence_en", "english", "chinese")}[fmt]
    if not set(needed) & set(header):
        raise LabelsError(f"{path} has none of the columns {', '.join(needed)} that --format {fmt} needs")
    mapped = [(i, _CSV_COLUMNS[h]) for i, h in enumerate(header) if h in _CSV_COLUMNS]
    # english wins over sentence_en/sentence when several map to subtitle.
    priority = {"english": 3, "sentence_en": 2, "sentence": 1}
    best: dict[str, tuple[int, int]] = {}
    for i, column in mapped:
        rank = priority.get(header[i], 0)
        if column not in best or rank > best[column][1]:
            best[column] = (i, rank)
    name_at = header.index("name")
    previous_end = 1
    while True:
        start = previous_end + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            parsed.errors.append((reader.line_num, f"unreadable CSV ({exc}); the rest of the file is skipped"))
            break
        previous_end = reader.line_num
        if not record or all(not c.strip() for c in record):
            continue
        if len(record) != len(header):
            parsed.errors.append((start, f"{len(record)} fields but the header has {len(header)}"))
            continue
        name = record[name_at].strip()
        if not name:
            parsed.errors.append((start, "empty name"))
            continue
        values: dict[str, Any] = {}
        problem = None
        for column, (i, _) in best.items():
            raw = record[i].strip()
            if _TYPES[column] == pa.float64():
                if raw == "":
                    continue
                number = _float(raw)
                if number is None:
                    problem = f"{header[i]} {raw!r} is not a number"
                    break
                if not (column == "valence" and number == UNKNOWN_VALENCE):
                    values[column] = number
            elif raw:
                values[column] = raw
        if problem:
            parsed.errors.append((start, problem))
            continue
        parsed.rows.append(AnnotationRow(start, name, values))
    return parsed


def _read_merr_json(path: Path) -> ParsedAnnotations:
    parsed = ParsedAnnotations("merr-json")
    text = _text(path)
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabelsError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}): "
            "fix that line and import again"
        ) from exc
    entries = list(_top_level_entries(text))
    if entries and entries[0][0] == -1:
        raise LabelsError(
            f"{path} is not a MERR annotation file: expected one JSON object keyed by clip name"
        )
    for line, name, value in entries:
        if not isinstance(value, dict):
            parsed.errors.append((line, f"entry {name!r} is a {type(value).__name__}, expected an object"))
            continue
        values: dict[str, Any] = {}
        caption = value.get("smp_reason_caption") or value.get("caption")
        if caption is not None:
            if not isinstance(caption, str):
                parsed.errors.append((line, f"entry {name!r}: caption is not a string"))
                continue
            values["description"] = caption
        if value.get("peak_index") not in (None, ""):
            try:
                peak = int(str(value["peak_index"]).strip())
                if peak < 0:
                    raise ValueError
            except ValueError:
                parsed.errors.append(
                    (line, f"entry {name!r}: peak_index {value['peak_index']!r} is not a frame number")
                )
                continue
            values["peak_frame"] = peak
        if not values:
            parsed.errors.append(
                (line, f"entry {name!r} has no smp_reason_caption, caption or peak_index")
            )
            continue
        parsed.rows.append(AnnotationRow(line, name, values))
    return parsed


def _top_level_entries(text: str) -> Iterator[tuple[int, str, Any]]:
    """``(line, key, value)`` of each member of the top-level JSON object, in order.

    Yields a single ``(-1, "", None)`` when the top level is not an object. The text
    must already be valid JSON.
    """
    from json.decoder import scanstring

    decoder = json.JSONDecoder()
    n = len(text)

    def skip(i: int) -> int:
        while i < n and text[i] in " \t\r\n":
            i += 1
        return i

    i = skip(0)
    if i >= n or text[i] != "{":
        yield -1, "", None
        return
    i, line, counted = skip(i + 1), 1, 0
    while i < n and text[i] != "}":
        key, i = scanstring(text, i + 1)  # text[i] is the opening quote
        line += text.count("\n", counted, i)
        counted = i
        i = skip(i)
        i = skip(i + 1)  # past ':'
        value, i = decoder.raw_decode(text, i)
        yield line, key, value
        i = skip(i)
        if i < n and text[i] == ",":
            i = skip(i + 1)


# ---------------------------------------------------------------------- applying
def import_annotations(
    store: Store,
    path: str | os.PathLike,
    *,
    fmt: str = "auto",
    where: str | None = None,
    create_missing: bool = True,
) -> AnnotationImportReport:
    """Put an annotation file's values onto clip rows (matched by clip name).

    Args:
        store: the store.
        path: the annotation file.
        fmt: ``auto`` or one of :data:`ANNOTATION_FORMATS`.
        where: SQL filter on clip columns restricting which clips names may match.
        create_missing: create no-media rows for names not in the store (default);
            when False they are reported as unmatched instead.

    Returns:
        An :class:`AnnotationImportReport`. A value missing from a line (no valence,
        no caption) leaves the stored one alone.

    Raises:
        LabelsError: the file cannot be read at all (see :func:`read_annotations`), or
            a column holds values of another type than the store keeps there.
    """
    path = Path(path).expanduser()
    parsed = read_annotations(path, fmt)
    report = AnnotationImportReport(str(path), parsed.format, rows=len(parsed.rows))
    report.skipped = list(parsed.errors)

    by_name: dict[str, dict[str, Any]] = {}
    for row in parsed.rows:
        if row.name in by_name:
            report.duplicates.append(row.name)
            by_name[row.name].update(row.values)
        else:
            by_name[row.name] = dict(row.values)
    resolver = ClipResolver(store, where)
    match = resolver.resolve(by_name)
    if create_missing and match.unmatched:
        resolver.create(match)
        report.created = len(match.created)
    report.unmatched = list(match.unmatched)
    report.ambiguous = sorted(match.ambiguous)

    values = {match.ids[n]: v for n, v in by_name.items() if n in match.ids}
    truncate_text_values(values.values(), path)  # a 10 MB caption must not slow every listing
    report.columns = sorted({c for v in values.values() for c in v})
    _upsert_values(store, values, path)
    report.annotated = len(values)
    _record_skipped(store, report, path)
    report.version = store.version()
    if report.duplicates:
        log.warning(f"{len(report.duplicates)} names appear more than once in {path}; later lines win")
    return report


def _upsert_values(store: Store, values: dict[str, dict[str, Any]], path: Path) -> None:
    """Upsert per group of rows carrying the same columns (absent values stay as stored)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for clip_id, row in values.items():
        present = {c: v for c, v in row.items() if v is not None}
        groups.setdefault(tuple(sorted(present)), []).append({"clip_id": clip_id, **present})
    stored = store.dataset(CLIPS).schema
    for cols, rows in groups.items():
        if not cols:
            continue
        fields = [pa.field("clip_id", pa.string(), nullable=False)]
        fields += [pa.field(c, _TYPES[c]) for c in cols]
        table = pa.Table.from_pylist(rows, schema=pa.schema(fields))
        for i, fld in enumerate(table.schema):
            if fld.name in stored.names and stored.field(fld.name).type != fld.type:
                target = stored.field(fld.name).type
                try:
                    table = table.set_column(i, fld.name, table.column(i).cast(target))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise LabelsError(
                        f"column {fld.name!r} of the store holds {target} values but {path} gives "
                        f"{fld.type}: rename the column in the store or fix the file"
                    ) from exc
        store.upsert_clips(table)


def _record_skipped(store: Store, report: AnnotationImportReport, path: Path) -> None:
    if not report.skipped:
        return
    now = datetime.now(timezone.utc)
    store.record_errors(
        {"clip_id": None, "uri": f"{path}:{line}", "stage": "import", "encoder": "annotations",
         "message": f"line {line}: {reason}", "at": now}
        for line, reason in report.skipped
    )
    for line, reason in report.skipped[:_EXAMPLES]:
        log.warning(f"skipped {path} line {line}: {reason}")
    if len(report.skipped) > _EXAMPLES:
        log.warning(f"... and {len(report.skipped) - _EXAMPLES} more unreadable lines")


# ----------------------------------------------------------------------- writing
def write_annotation_txt(clips, path: str | os.PathLike) -> tuple[int, int]:
    """Write Emotion-LLaMA's ``name frames label valence`` txt for labelled clips.

    Args:
        clips: polars DataFrame with ``export_name``, ``label`` and optionally
            ``frames`` / ``n_frames`` / ``valence`` columns.
        path: the txt to write (not written when no clip has a label).

    Returns:
        ``(lines written, clips left out for having no usable label)``.
    """
    rows, left_out, foreign = [], 0, set()
    cols = clips.columns
    for row in clips.iter_rows(named=True):
        label, name = row.get("label"), row.get("export_name")
        if not label or not name or any(ch.isspace() for ch in str(label) + str(name)):
            left_out += 1
            continue
        frames = row.get("frames") if "frames" in cols else None
        if frames is None and "n_frames" in cols:
            frames = row.get("n_frames")
        valence = row.get("valence") if "valence" in cols else None
        try:
            valence = float(valence) if valence is not None else UNKNOWN_VALENCE
        except (TypeError, ValueError):
            valence = UNKNOWN_VALENCE
        if label not in EMOTION_LLAMA_LABELS:
            foreign.add(label)
        shown = "-10" if valence == UNKNOWN_VALENCE else repr(valence)
        rows.append(f"{name} {int(frames or 0)} {label} {shown}")
    if rows:
        Path(path).write_text("\n".join(sorted(rows)) + "\n", encoding="utf-8")
    if foreign:
        log.warning(
            f"labels {', '.join(sorted(foreign))} are not among Emotion-LLaMA's nine "
            f"({', '.join(EMOTION_LLAMA_LABELS)}): map them before training, or pass its "
            "`labels` option"
        )
    return len(rows), left_out


def write_transcripts_csv(clips, path: str | os.PathLike) -> int:
    """Write ``name,sentence`` (Emotion-LLaMA's transcription CSV) for clips with a subtitle.

    Returns:
        Rows written (the file is not written when no clip has a subtitle).
    """
    if "subtitle" not in clips.columns:
        return 0
    rows = [(r["export_name"], r["subtitle"]) for r in clips.iter_rows(named=True)
            if r.get("export_name") and r.get("subtitle")]
    if not rows:
        return 0
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "sentence"])
        writer.writerows(sorted(rows))
    return len(rows)
