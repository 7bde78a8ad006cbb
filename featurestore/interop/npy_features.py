"""Per-clip ``.npy`` feature folders (Emotion-LLaMA / MERTools) in and out of the store.

Import: every folder becomes a feature set (``features/<folder>.lance`` unless renamed).
``[D]`` and ``[1, D]`` arrays become the pooled vector; ``[T, D]`` arrays (frame level)
become tokens plus their mean. The spec records the origin (layout, folder, path, file
count, level, array form, source dtype) so an export writes the same arrays back:
float16 and float32 files round-trip bit for bit (same dtype, shape and values; the
file bytes too when the source was written by ``np.save``). float64 files are stored as
float32 (emofs keeps float16/float32) and exported as float64 again: not bitwise.

Bad files are skipped one by one with a reason (recorded in ``errors.lance`` at stage
``import``): not a .npy file, pickled/object arrays (never loaded), non-float dtype,
empty arrays, shapes other than ``[D]``/``[1, D]``/``[T, D]``, a dim that differs from the
folder's majority, NaN or inf.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..progress import track_progress
from ..errors import InputError
from ..features import feature_spec, features_name, write_features
from ..store import Store
from .clipmatch import ClipResolver
from .layouts import (
    FeatureFolder,
    check_layout,
    default_set_name,
    export_folder_name,
    find_feature_folders,
)
from .npy_io import NpyError, NpyHeader, read_many, read_npy, read_npy_head, write_npy

log = logging.getLogger(__name__)

__all__ = [
    "FeatureImportReport",
    "FeatureExportReport",
    "import_features",
    "export_features",
]

_EXAMPLES = 5
#: Rows and bytes per write batch.
_BATCH_ROWS = 32768
_BATCH_BYTES = 256 << 20
_FLOAT_DTYPES = {np.dtype(t).newbyteorder(o) for t in ("f2", "f4", "f8") for o in "<>="}


@dataclass
class FeatureImportReport:
    """What importing one folder did.

    Attributes:
        feature_set: the feature set written.
        folder: the source folder.
        files: ``.npy`` files found.
        imported: rows written.
        created: clip rows created (no media) for names the store did not know.
        skipped: ``(file, reason)`` for every rejected file.
        unmatched: names that matched no clip (not imported).
        ambiguous: names held by several clips (not imported; narrow with ``--where``).
        dim, dtype, source_dtype, level, form: what was stored.
        version: the feature set's Lance version after the import.
        seconds: wall time.
    """

    feature_set: str
    folder: str
    files: int = 0
    imported: int = 0
    created: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)
    dim: int | None = None
    dtype: str | None = None
    source_dtype: str | None = None
    level: str | None = None
    form: str | None = None
    version: int | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (examples instead of full lists)."""
        return {
            "feature_set": self.feature_set,
            "folder": self.folder,
            "files": self.files,
            "imported": self.imported,
            "created_clips": self.created,
            "skipped": len(self.skipped),
            "skipped_examples": [{"file": f, "reason": r} for f, r in self.skipped[:_EXAMPLES]],
            "unmatched": len(self.unmatched),
            "unmatched_examples": self.unmatched[:_EXAMPLES],
            "ambiguous": len(self.ambiguous),
            "ambiguous_examples": self.ambiguous[:_EXAMPLES],
            "dim": self.dim,
            "dtype": self.dtype,
            "source_dtype": self.source_dtype,
            "level": self.level,
            "form": self.form,
            "version": self.version,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class _Entry:
    path: str
    name: str
    header: NpyHeader
    array: np.ndarray | None  # kept from the header pass when the file is small


def _shape_problem(header: NpyHeader) -> str | None:
    if header.dtype not in _FLOAT_DTYPES:
        return f"dtype {header.dtype} is not a float feature array (float16/32/64)"
    if 0 in header.shape or not header.shape:
        return f"empty array (shape {list(header.shape)})"
    if len(header.shape) > 2:
        return f"shape {list(header.shape)}: expected [D], [1, D] or [T, D]"
    return None


def _form(shape: tuple[int, ...]) -> str:
    if len(shape) == 1:
        return "vector"
    return "row" if shape[0] == 1 else "frames"


def import_features(
    store: Store,
    root: str | os.PathLike,
    *,
    layout: str,
    name: str | None = None,
    where: str | None = None,
    create_missing: bool | None = None,
    replace: bool = False,
    workers: int = 8,
    progress: bool = True,
) -> list[FeatureImportReport]:
    """Import Emotion-LLaMA / MERTools ``.npy`` folders as feature sets.

    Args:
        store: the store to write to.
        root: a folder of ``<name>.npy`` files, or a folder of such folders.
        layout: ``"emotion-llama"`` or ``"mertools"`` (``<model>-UTT`` / ``<model>-FRA``).
        name: feature-set name (only with a single folder); default: the folder name.
        where: SQL filter on clip columns restricting which clips names may match.
        create_missing: create no-media clip rows for unknown names. ``None`` (default)
            creates them only when none of the folder's names is in the store yet.
        replace: allow writing over an existing feature set of another origin (its
            rows are deleted in a new Lance version; older versions stay readable).
        workers: reader threads.
        progress: show progress bars.

    Returns:
        One :class:`FeatureImportReport` per folder.

    Raises:
        InputError: bad flags, no feature folder, or a set name already used by
            features of another origin (without ``replace``).
    """
    check_layout(layout)
    folders = find_feature_folders(root, layout)
    if name is not None and len(folders) > 1:
        raise InputError(
            f"--as names one feature set but {root} holds {len(folders)} feature folders "
            f"({', '.join(f.path.name for f in folders[:5])}): pass one folder with --as"
        )
    if workers < 1:
        raise InputError(f"--workers must be >= 1 (got {workers})")
    resolver = ClipResolver(store, where)
    reports = []
    for folder in folders:
        set_name = name or default_set_name(folder)
        features_name(set_name)  # validates the name
        reports.append(
            _import_folder(store, folder, set_name, layout, resolver, create_missing, replace,
                           workers, progress)
        )
    return reports


def _import_folder(store, folder: FeatureFolder, set_name, layout, resolver, create_missing,
                   replace, workers, progress) -> FeatureImportReport:
    started = time.perf_counter()
    report = FeatureImportReport(set_name, str(folder.path), files=len(folder.files))

    # Pass 1: headers (and the arrays of small files), in a thread pool.
    with track_progress(len(folder.files), f"reading {folder.path.name}", enabled=progress,
                      unit="files") as advance:
        heads = read_many(folder.files, read_npy_head, workers=workers, advance=advance)
    entries: list[_Entry] = []
    for path, head in zip(folder.files, heads):
        if isinstance(head, BaseException):
            report.skipped.append((str(path), _reason(head)))
            continue
        header, array = head
        problem = _shape_problem(header)
        if problem:
            report.skipped.append((str(path), problem))
            continue
        entries.append(_Entry(path, os.path.basename(path)[:-4], header, array))

    # The folder's dim, level, form and dtype: the majority wins, the rest are rejected.
    if entries:
        dims = Counter(e.header.shape[-1] for e in entries)
        dim = max(dims.items(), key=lambda kv: (kv[1], -kv[0]))[0]
        if len(dims) > 1:
            others = ", ".join(f"{d} ({n} files)" for d, n in dims.most_common() if d != dim)
            log.warning(f"{folder.path.name}: most files have dim {dim}; skipping files of dim {others}")
        kept = []
        for e in entries:
            if e.header.shape[-1] != dim:
                report.skipped.append(
                    (str(e.path), f"dim {e.header.shape[-1]} but most files in {folder.path.name} have dim {dim}")
                )
            else:
                kept.append(e)
        entries = kept
    if entries:
        level = folder.level
        if level == "auto":
            level = "frame" if any(_form(e.header.shape) == "frames" for e in entries) else "utterance"
        if level == "utterance":
            kept = []
            for e in entries:
                if _form(e.header.shape) == "frames":
                    report.skipped.append(
                        (str(e.path), f"frame-level array {list(e.header.shape)} in the utterance-level "
                                      f"folder {folder.path.name}: move it to a -FRA folder")
                    )
                else:
                    kept.append(e)
            entries = kept
    if not entries:
        _record_skipped(store, report, set_name)
        report.seconds = time.perf_counter() - started
        if report.skipped:
            log.warning(f"{folder.path.name}: no usable .npy file ({len(report.skipped)} skipped)")
        return report

    forms = Counter(_form(e.header.shape) for e in entries)
    form = "frames" if level == "frame" else forms.most_common(1)[0][0]
    dtypes: Counter = Counter()
    for dt, n in Counter(e.header.dtype for e in entries).items():
        dtypes[dt.name] += n
    source_dtype = dtypes.most_common(1)[0][0]
    storage = "float16" if set(dtypes) == {"float16"} else "float32"
    if "float64" in dtypes:
        log.warning(f"{folder.path.name}: float64 arrays are stored as float32 (an export writes "
             "float64 again, but not bit for bit)")
    report.dim, report.dtype, report.source_dtype = dim, storage, source_dtype
    report.level, report.form = level, form
    spec = {
        "source": "import",
        "layout": layout,
        "folder": folder.path.name,
        "path": str(folder.path),
        "files": len(folder.files),
        "encoder": folder.encoder,
        "level": level,
        "form": form,
        "dim": dim,
        "dtype": storage,
        "source_dtype": source_dtype,
        "pooling": "mean over frames" if level == "frame" else "as stored",
    }

    # Names -> clip ids. No-media rows for unknown names (where asked, or where the store
    # knows none of them) are created batch by batch, only for files that pass every check.
    names = [e.name for e in entries]
    match = resolver.resolve(names)
    create = create_missing if create_missing is not None else not resolver.knows_any(names)
    report.ambiguous = sorted(match.ambiguous)
    if create:
        entries = [e for e in entries if e.name not in match.ambiguous]
    else:
        report.unmatched = list(match.unmatched)
        entries = [e for e in entries if e.name in match.ids]
    _check_target(store, set_name, spec, replace)

    # Pass 2: arrays -> batches -> write_features.
    with track_progress(len(entries), f"importing {set_name}", enabled=progress, unit="files") as advance:
        for batch in _batches(entries):
            missing = [e for e in batch if e.array is None]
            if missing:
                for e, arr in zip(missing, read_many([e.path for e in missing], read_npy, workers=workers)):
                    e.array = arr if isinstance(arr, np.ndarray) else None
                    if not isinstance(arr, np.ndarray):
                        report.skipped.append((str(e.path), _reason(arr)))
            rows = _convert(batch, dim, level, storage, report)
            new = [e.name for e, _, _ in rows if e.name not in match.ids]
            if new:
                resolver.create(match, new)
                report.created += len(new)
            if rows:
                ids = [match.ids[e.name] for e, _, _ in rows]
                vectors = np.stack([v for _, v, _ in rows])  # (N, D)
                tokens = [t for _, _, t in rows] if level == "frame" else None
                report.version = write_features(store, set_name, ids, vectors, spec, dtype=storage,
                                                tokens=tokens)
                store.clear_errors("import", [str(e.path) for e, _, _ in rows], encoder=set_name)
                report.imported += len(rows)
            for e in batch:
                e.array = None  # free memory as we go
            advance(len(batch))
    _record_skipped(store, report, set_name)
    report.seconds = time.perf_counter() - started
    return report


def _convert(batch: list[_Entry], dim: int, level: str, storage: str, report) -> list:
    """``(entry, vector (D,), tokens (T, D) | None)`` for the arrays that are usable."""
    np_storage = np.float16 if storage == "float16" else np.float32
    usable = [e for e in batch if e.array is not None]
    if not usable:
        return []
    # One (sum T, D) matrix for the batch: checks and casts run once, not per file.
    lengths = np.array([e.array.size // dim for e in usable])
    frames = np.concatenate([np.asarray(e.array).reshape(-1, dim) for e in usable])  # (sum T, D)
    finite = np.isfinite(frames).all(axis=1)
    with np.errstate(over="ignore"):
        stored = frames.astype(np_storage, copy=False)  # (sum T, D)
    in_range = np.isfinite(stored).all(axis=1) if stored.dtype != frames.dtype else finite
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    rows = []
    for i, e in enumerate(usable):
        lo, hi = bounds[i], bounds[i + 1]
        if not finite[lo:hi].all():
            report.skipped.append((e.path, "contains NaN or inf values"))
            continue
        if not in_range[lo:hi].all():
            report.skipped.append((e.path, f"values exceed the {storage} range"))
            continue
        if level == "frame":
            tokens = stored[lo:hi]  # (T, D)
            rows.append((e, tokens.astype(np.float32).mean(axis=0).astype(np_storage), tokens))
        else:
            rows.append((e, stored[lo], None))
    return rows


def _batches(entries: list[_Entry]):
    batch, size = [], 0
    for e in entries:
        batch.append(e)
        size += e.header.nbytes
        if len(batch) >= _BATCH_ROWS or size >= _BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _check_target(store: Store, set_name: str, spec: dict, replace: bool) -> None:
    """Refuse to mix imported rows into a set of another origin (unless ``replace``)."""
    existing = feature_spec(store, set_name)
    if existing is None:
        return
    same = (
        existing.get("source") == "import"
        and all(existing.get(k) == spec[k] for k in ("dim", "dtype", "level", "form"))
    )
    if same:
        return
    if not replace:
        origin = "imported" if existing.get("source") == "import" else "extracted"
        raise InputError(
            f"feature set {set_name!r} already exists ({origin}, dim {existing.get('dim')}, "
            f"dtype {existing.get('dtype')}): pass --as NEW_NAME to keep both, or --replace "
            "to replace it (older versions stay readable in Lance's history)"
        )
    ds = store.dataset(features_name(set_name))
    if ds is not None and ds.count_rows():
        ds.delete("true")


def _record_skipped(store: Store, report: FeatureImportReport, set_name: str) -> None:
    if not report.skipped:
        return
    now = datetime.now(timezone.utc)
    store.record_errors(
        {"clip_id": None, "uri": path, "stage": "import", "encoder": set_name,
         "message": reason, "at": now}
        for path, reason in report.skipped
    )
    for path, reason in report.skipped[:_EXAMPLES]:
        log.warning(f"skipped {path}: {reason}")
    if len(report.skipped) > _EXAMPLES:
        log.warning(f"... and {len(report.skipped) - _EXAMPLES} more skipped files (see `emofs errors "
             f"--where \"stage = 'import'\"`)")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, NpyError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"cannot read file ({exc.strerror or exc})"
    return f"unreadable ({exc})"


# ------------------------------------------------------------------------ export
@dataclass
class FeatureExportReport:
    """What an export wrote.

    Attributes:
        out_dir: the export folder.
        folders: ``{folder: files written}``.
        sets: ``{feature set: folder}``.
        skipped: ``(feature set, clip_id, reason)`` for rows not written.
        annotation_file: the annotation txt written (None if none).
        annotation_rows: lines in it.
        transcripts_file: the ``name,sentence`` CSV written (None if no subtitles).
        unlabelled: exported clips left out of the annotation txt (no label).
        seconds: wall time.
    """

    out_dir: str
    folders: dict[str, int] = field(default_factory=dict)
    sets: dict[str, str] = field(default_factory=dict)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    annotation_file: str | None = None
    annotation_rows: int = 0
    transcripts_file: str | None = None
    unlabelled: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {
            "out_dir": self.out_dir,
            "folders": self.folders,
            "sets": self.sets,
            "skipped": len(self.skipped),
            "skipped_examples": [
                {"feature_set": s, "clip_id": c, "reason": r} for s, c, r in self.skipped[:_EXAMPLES]
            ],
            "annotation_file": self.annotation_file,
            "annotation_rows": self.annotation_rows,
            "transcripts_file": self.transcripts_file,
            "unlabelled": self.unlabelled,
            "seconds": round(self.seconds, 3),
        }


def export_features(
    store: Store,
    out_dir: str | os.PathLike,
    *,
    layout: str = "emotion-llama",
    encoders: Sequence[str] | None = None,
    where: str | None = None,
    annotations: bool = True,
    annotation_file: str = "annotations.txt",
    overwrite: bool = False,
    workers: int = 8,
    progress: bool = True,
) -> FeatureExportReport:
    """Write feature sets as per-clip ``<name>.npy`` folders a loader reads directly.

    ``emotion-llama``: ``HL-UTT/``, ``mae_340_UTT/``, ``maeV_399_UTT/`` (from the
    ``hubert``/``mae``/``videomae`` sets; any other set keeps its name; an imported set
    its original folder) plus ``annotations.txt`` (``name frames label valence``, valence
    -10 when unknown) and ``transcripts.csv`` (``name,sentence``) beside them, which is
    where Emotion-LLaMA's loader looks for the feature folders. ``mertools``:
    ``<set>-UTT/`` vectors and, for sets with tokens, ``<set>-FRA/`` ``[T, D]`` arrays.

    Extracted sets are written as float32 ``[D]`` vectors; imported sets in the dtype
    and shape they were imported from (a bitwise round trip for float16/float32).

    Args:
        store: the store to read.
        out_dir: the export folder (created if needed).
        layout: ``"emotion-llama"`` or ``"mertools"``.
        encoders: feature sets to export (default: all).
        where: SQL filter on clip columns selecting the clips to export.
        annotations: also write the annotation txt and transcripts CSV.
        annotation_file: file name of the annotation txt inside ``out_dir``.
        overwrite: replace ``.npy`` files that already exist in the target folders.
        workers: writer threads.
        progress: show progress bars.

    Raises:
        InputError: unknown feature sets, no clips selected, or files in the way.
    """
    started = time.perf_counter()
    check_layout(layout)
    available = store.feature_sets()
    wanted = list(encoders) if encoders else available
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise InputError(
            f"no feature set {', '.join(map(repr, unknown))} in {store.uri} "
            f"(available: {', '.join(available) or 'none'}): pick from those with --encoders"
        )
    if not wanted:
        raise InputError(f"no feature sets in {store.uri}: run `emofs extract` or `emofs import features` first")
    if "/" in annotation_file or annotation_file.startswith("."):
        raise InputError(f"--annotation-file must be a plain file name (got {annotation_file!r})")
    out = Path(out_dir).expanduser().absolute()
    clips = store.clips(where=where, columns=None)
    if clips.height == 0:
        raise InputError(f"no clips selected{f' by --where {where!r}' if where else ''} in {store.uri}")
    names, clashes = _export_names(clips)
    report = FeatureExportReport(str(out))
    report.skipped.extend(
        ("*", clip_id, f"its name {name!r} is shared by several selected clips (narrow with --where)")
        for clip_id, name in clashes
    )

    plans = []
    for set_name in wanted:
        spec = feature_spec(store, set_name) or {}
        ds = store.dataset(features_name(set_name))
        has_tokens = "tokens" in ds.schema.names
        imported = spec.get("source") == "import"
        # (folder, use tokens, dtype, form)
        if imported and spec.get("layout") == layout:
            level_frame = spec.get("level") == "frame"
            outputs = [(export_folder_name(set_name, spec, layout, frame_level=level_frame),
                        level_frame and has_tokens, spec.get("source_dtype", "float32"),
                        spec.get("form", "vector"))]
        else:
            dtype = spec.get("source_dtype", "float32") if imported else "float32"
            outputs = [(export_folder_name(set_name, None, layout), False, dtype, "vector")]
            if layout == "mertools" and has_tokens:
                outputs.append((export_folder_name(set_name, None, layout, frame_level=True), True,
                                dtype, "frames"))
        for folder, tokens, dtype, form in outputs:
            if folder in report.folders:
                raise InputError(
                    f"feature sets {report.sets.get(folder, '?')!r} and {set_name!r} both export to "
                    f"{folder}/: export them separately with --encoders"
                )
            report.folders[folder] = 0
            report.sets[set_name] = folder
            plans.append((set_name, folder, tokens, dtype, form))

    for _, folder, _, _, _ in plans:
        _check_free(out / folder, names, overwrite)

    exported: set[str] = set()
    for set_name, folder, tokens, dtype, form in plans:
        target = out / folder
        target.mkdir(parents=True, exist_ok=True)
        written = _export_set(store, set_name, target, names, tokens, dtype, form, workers, progress)
        report.folders[folder] = len(written)
        exported.update(written)

    if annotations and exported:
        import polars as pl

        from .annotations import write_annotation_txt, write_transcripts_csv

        selected = clips.filter(pl.col("clip_id").is_in(sorted(exported)))
        selected = selected.with_columns(
            pl.col("clip_id").replace_strict(names, default=None).alias("export_name")
        )
        path = out / annotation_file
        report.annotation_rows, report.unlabelled = write_annotation_txt(selected, path)
        report.annotation_file = str(path) if report.annotation_rows else None
        transcripts = out / "transcripts.csv"
        if write_transcripts_csv(selected, transcripts):
            report.transcripts_file = str(transcripts)
    report.seconds = time.perf_counter() - started
    return report


def _export_names(clips) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """``{clip_id: file name}`` (the clip's ``name``) and the ``(clip_id, name)`` pairs
    left out because several selected clips share the name (or it is not a file name)."""
    pairs = []
    for clip_id, name in clips.select(["clip_id", "name"]).iter_rows():
        pairs.append((clip_id, name if name else Path(clip_id).stem))
    counts = Counter(n for _, n in pairs)
    names, clashes = {}, []
    for clip_id, name in pairs:
        if counts[name] == 1 and name and "/" not in name and not name.startswith("."):
            names[clip_id] = name
        else:
            clashes.append((clip_id, name))
    return names, clashes


def _check_free(folder: Path, names: dict[str, str], overwrite: bool) -> None:
    if overwrite or not folder.is_dir():
        return
    clash = [n for n in names.values() if (folder / f"{n}.npy").exists()]
    if clash:
        raise InputError(
            f"{folder} already holds {len(clash)} of the files to export (e.g. {clash[0]}.npy): "
            "pass --overwrite to replace them, or export to an empty folder"
        )


def _write_chunk(jobs: list[tuple[Path, np.ndarray]]) -> None:
    for path, array in jobs:
        write_npy(path, array)


def _export_set(store, set_name, target: Path, names, tokens, dtype, form, workers,
                progress) -> list[str]:
    """Write one feature set's rows as ``<name>.npy`` files; returns the clip ids written."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.compute as pc

    ds = store.dataset(features_name(set_name))
    np_dtype = np.dtype(dtype)
    columns = ["clip_id", "tokens" if tokens else "vector"]
    written: list[str] = []
    total = ds.count_rows()
    with track_progress(total, f"exporting {set_name}", enabled=progress, unit="files") as advance, \
            ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for batch in ds.to_batches(columns=columns, batch_size=4096):
            ids = batch.column("clip_id").to_pylist()
            jobs = []
            if tokens:
                col = batch.column("tokens")
                lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
                inner = col.flatten()
                dim = inner.type.list_size
                flat = inner.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)  # (sum T, D)
                bounds = np.concatenate([[0], np.cumsum(lengths)])
                arrays = (flat[bounds[i] : bounds[i + 1]] for i in range(len(ids)))
            else:
                col = batch.column("vector")
                dim = col.type.list_size
                flat = col.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)  # (N, D)
                arrays = iter(flat)
            for clip_id, arr in zip(ids, arrays):
                name = names.get(clip_id)
                if name is None:
                    continue  # not selected by --where, or a name shared by several clips
                if not tokens:
                    arr = arr.reshape(1, dim) if form == "row" else arr.reshape(dim)
                jobs.append((target / f"{name}.npy", np.ascontiguousarray(arr, dtype=np_dtype)))
                written.append(clip_id)
            chunks = [jobs[i : i + 256] for i in range(0, len(jobs), 256)]
            list(pool.map(_write_chunk, chunks))
            advance(len(ids))
    return written
