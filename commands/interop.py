"""Interop commands: ``import features``, ``import annotations``, ``export features``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from featurestore.errors import InputError

from .common import JsonOpt, StoreOpt, WhereOpt, csv_list, echo_json, open_store, sub_app

__all__ = [
    "import_app",
    "export_app",
    "import_features_command",
    "import_annotations_command",
    "export_features_command",
]

import_app = sub_app("Import Emotion-LLaMA / MERTools feature folders and annotation files.")
export_app = sub_app("Export feature sets as the .npy folders Emotion-LLaMA (or MERTools) reads.")

_LayoutOpt = Annotated[
    str, typer.Option("--layout", help="emotion-llama (HL-UTT/, mae_340_UTT/, ...) or mertools (<model>-UTT/-FRA).")
]


def _examples(items: list) -> str:
    """The first five items, and ``...`` when there are more."""
    shown = ", ".join(map(str, items[:5]))
    return shown + (", ..." if len(items) > 5 else "")


@import_app.command("features")
def import_features_command(
    folder: Annotated[Path, typer.Argument(help="A folder of <name>.npy files, or a folder of such folders.")],
    layout: _LayoutOpt = "emotion-llama",
    as_name: Annotated[
        Optional[str], typer.Option("--as", help="Feature-set name (one folder only). [default: the folder name]")
    ] = None,
    where: WhereOpt = None,
    create_missing: Annotated[
        Optional[bool],
        typer.Option("--create-missing/--no-create-missing",
                     help="Create no-media clip rows for unknown names. [default: only when the "
                          "store knows none of the folder's names]", show_default=False),
    ] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace an existing set of another origin.")] = False,
    workers: Annotated[int, typer.Option("--workers", help="Reader threads.")] = 8,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import per-clip .npy features; each folder becomes a feature set.

    Names (file stems) map to clips by their name column; [T, D] arrays are stored as
    tokens plus their mean. Bad files (pickled/object arrays, NaN/inf, empty, wrong dim)
    are skipped with a reason and recorded in errors.lance.

    Examples:
      emofs import features MER2023/ --layout emotion-llama
      emofs import features features/chinese-hubert-large-FRA --layout mertools --as hubert_fra
      emofs import features feats/HL-UTT --where "modality = 'audio+video'"
    """
    from featurestore.interop import import_features

    reports = import_features(
        open_store(store, create=True), folder, layout=layout, name=as_name, where=where,
        create_missing=create_missing, replace=replace, workers=workers,
    )
    if as_json:
        echo_json([r.as_dict() for r in reports])
        return
    for r in reports:
        typer.echo(
            f"{r.feature_set}: {r.imported} of {r.files} files imported from {r.folder} "
            f"(dim {r.dim}, {r.dtype}, {r.level} level), {r.created} clip rows created, "
            f"{len(r.skipped)} skipped ({r.seconds:.1f}s)"
        )
        if r.unmatched:
            typer.echo(f"  {len(r.unmatched)} names matched no clip and were not imported (e.g. "
                       f"{_examples(r.unmatched)}): pass --create-missing to add them", err=True)
        if r.ambiguous:
            typer.echo(f"  {len(r.ambiguous)} names match several clips and were skipped (e.g. "
                       f"{_examples(r.ambiguous)}): narrow the clips with --where", err=True)


@import_app.command("annotations")
def import_annotations_command(
    file: Annotated[Path, typer.Argument(help="Annotation txt, label / transcript CSV, or MERR JSON.")],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="auto, emotion-llama-txt, mer-csv, transcripts or merr-json.")
    ] = "auto",
    where: WhereOpt = None,
    create_missing: Annotated[
        bool, typer.Option("--create-missing/--no-create-missing",
                           help="Create no-media clip rows for names not in the store.")
    ] = True,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Put labels, valence, subtitles, descriptions and peak frames onto clip rows.

    Clips are matched by name; unknown names become clip rows without media. Unreadable
    lines are skipped with their line number (and recorded in errors.lance).

    Examples:
      emofs import annotations MERR_fine_grained.txt
      emofs import annotations MERR_fine_grained.json
      emofs import annotations train_label.csv --format mer-csv
      emofs import annotations subtitle_chieng.csv
    """
    from featurestore.interop import import_annotations

    r = import_annotations(open_store(store, create=True), file, fmt=fmt, where=where,
                           create_missing=create_missing)
    if as_json:
        echo_json(r.as_dict())
        return
    typer.echo(
        f"{r.file} ({r.format}): {r.rows} rows, {r.annotated} clips annotated "
        f"({', '.join(r.columns) or 'no columns'}), {r.created} clip rows created, "
        f"{len(r.skipped)} lines skipped (store version {r.version})"
    )
    if r.unmatched:
        typer.echo(f"  {len(r.unmatched)} names matched no clip (e.g. {_examples(r.unmatched)})", err=True)
    if r.ambiguous:
        typer.echo(f"  {len(r.ambiguous)} names match several clips and were skipped (e.g. "
                   f"{_examples(r.ambiguous)}): narrow with --where", err=True)


@export_app.command("features")
def export_features_command(
    folder: Annotated[Path, typer.Argument(help="Folder to write the feature folders and annotation txt into.")],
    layout: _LayoutOpt = "emotion-llama",
    encoders: Annotated[
        Optional[str], typer.Option("--encoders", help="Comma-separated feature sets. [default: all]")
    ] = None,
    where: WhereOpt = None,
    annotations: Annotated[
        bool, typer.Option("--annotations/--no-annotations", help="Also write the annotation txt + transcripts.csv.")
    ] = True,
    annotation_file: Annotated[
        str, typer.Option("--annotation-file", help="Name of the annotation txt.")
    ] = "annotations.txt",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing .npy files.")] = False,
    workers: Annotated[int, typer.Option("--workers", help="Writer threads.")] = 8,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write <name>.npy per clip in Emotion-LLaMA's folders (hubert -> HL-UTT,
    mae -> mae_340_UTT, videomae -> maeV_399_UTT; imported sets keep their folder),
    plus its annotation txt (name frames label valence) and transcripts.csv.

    Examples:
      emofs export features el-data/ --encoders hubert,mae,videomae
      emofs export features el-data/ --where "modality = 'audio+video'"
      emofs export features mer-feats/ --layout mertools
    """
    from featurestore.interop import export_features

    if workers < 1:
        raise InputError(f"--workers must be >= 1 (got {workers})")
    r = export_features(
        open_store(store), folder, layout=layout, encoders=csv_list(encoders, "--encoders") or None,
        where=where, annotations=annotations, annotation_file=annotation_file,
        overwrite=overwrite, workers=workers,
    )
    if as_json:
        echo_json(r.as_dict())
        return
    for name, sub in r.sets.items():
        typer.echo(f"{name} -> {Path(r.out_dir) / sub}/ ({r.folders[sub]} files)")
    if r.annotation_file:
        typer.echo(f"annotations -> {r.annotation_file} ({r.annotation_rows} rows; "
                   f"{r.unlabelled} clips without a label left out)")
    if r.transcripts_file:
        typer.echo(f"transcripts -> {r.transcripts_file}")
    if r.skipped:
        typer.echo(f"  {len(r.skipped)} clips not exported (e.g. {r.skipped[0][1]}: {r.skipped[0][2]})",
                   err=True)
