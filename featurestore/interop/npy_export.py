"""Feature sets out of the store as per-clip ``.npy`` folders (Emotion-LLaMA / MERTools).

Extracted sets are written as float32 ``[D]`` vectors (MERTools: plus ``[T, D]`` token
arrays); imported sets go back in the dtype and shape they were imported from (see
:mod:`featurestore.interop.npy_features`), with the annotation txt and transcripts CSV
Emotion-LLaMA's loader reads beside the folders.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from ..features import feature_spec
from ..progress import track_progress
from ..schema import features_name
from ..store import Store
from .layouts import REPORT_EXAMPLES, check_layout, export_folder_name
from .npy_io import write_npy

__all__ = ["FeatureExportReport", "export_features"]


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
                {"feature_set": s, "clip_id": c, "reason": r} for s, c, r in self.skipped[:REPORT_EXAMPLES]
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
    # the bar counts the files written: the selected clips this set has, not its rows
    total = sum(1 for c in ds.to_table(columns=["clip_id"]).column("clip_id").to_pylist() if c in names)
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
            advance(len(jobs))
    return written
