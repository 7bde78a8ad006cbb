"""Per-clip ``.npy`` feature folders (Emotion-LLaMA / MERTools) into the store (export:
:mod:`featurestore.interop.npy_export`).

Every folder becomes a feature set (``features/<folder>.lance`` unless renamed).
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
from typing import Any

import numpy as np

from ..progress import track_progress
from ..errors import InputError
from ..features import feature_spec, write_features
from ..schema import features_name
from ..store import Store
from .clipmatch import ClipResolver
from .layouts import (
    REPORT_EXAMPLES,
    FeatureFolder,
    check_layout,
    default_set_name,
    find_feature_folders,
)
from .npy_io import NpyError, NpyHeader, read_many, read_npy, read_npy_head

log = logging.getLogger(__name__)

__all__ = ["FeatureImportReport", "import_features"]

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
            "skipped_examples": [{"file": f, "reason": r} for f, r in self.skipped[:REPORT_EXAMPLES]],
            "unmatched": len(self.unmatched),
            "unmatched_examples": self.unmatched[:REPORT_EXAMPLES],
            "ambiguous": len(self.ambiguous),
            "ambiguous_examples": self.ambiguous[:REPORT_EXAMPLES],
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
    with store.writing():
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
    for path, reason in report.skipped[:REPORT_EXAMPLES]:
        log.warning(f"skipped {path}: {reason}")
    if len(report.skipped) > REPORT_EXAMPLES:
        log.warning(f"... and {len(report.skipped) - REPORT_EXAMPLES} more skipped files (see `emofs errors "
             f"--where \"stage = 'import'\"`)")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, NpyError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"cannot read file ({exc.strerror or exc})"
    return f"unreadable ({exc})"
