"""Store commands: ingest, info, clips, errors, vacuum, check, samples."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, List, Optional

import typer

from featurestore.diskspace import human_bytes
from featurestore.errors import InputError

from .common import (
    FormatOpt,
    JsonOpt,
    StoreOpt,
    WhereOpt,
    check_format,
    csv_list,
    echo_json,
    open_store,
    print_frame,
)

__all__ = [
    "ingest_command",
    "info_command",
    "clips_command",
    "errors_command",
    "vacuum_command",
    "check_command",
    "samples_command",
]

_CLIP_COLUMNS = ["clip_id", "modality", "duration_s", "label", "speaker", "split"]
_ERROR_COLUMNS = ["stage", "encoder", "uri", "message"]


# ------------------------------------------------------------------------ ingest
def ingest_command(
    paths: Annotated[List[str], typer.Argument(help="Folders (walked recursively), media files, or s3:// prefixes.")],
    labels: Annotated[
        Optional[Path],
        typer.Option("--labels", help="CSV with a path, clip_id or name column + annotations."),
    ] = None,
    store: StoreOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Clips per commit.")] = 256,
    workers: Annotated[int, typer.Option("--workers", help="Probe threads.")] = 4,
    as_json: JsonOpt = False,
) -> None:
    """Add media files to the store (probe, hash, label); re-running is a no-op.

    Video: mp4 mkv avi mov webm flv. Audio: wav mp3 flac m4a ogg. Unreadable files are
    recorded in errors.lance and skipped.

    Examples:
      emofs ingest ../shared/data --labels ../shared/data/labels.csv
      emofs ingest new_clips/ a.mp4 --store s3://bucket/emofs
    """
    from extractors import ingest

    report = ingest(paths, open_store(store, create=True), labels=labels, batch_size=batch_size,
                    workers=workers)
    if as_json:
        echo_json(report.as_dict())
        return
    _print_ingest(report)


def _print_ingest(report) -> None:
    typer.echo(
        f"{report.files} files: {report.new} new, {report.updated} updated, "
        f"{report.unchanged} unchanged, {len(report.errors)} unreadable; "
        f"{report.annotated} clips got new annotations"
        + (f" ({', '.join(report.annotated_columns)})" if report.annotated_columns else "")
        + f" ({report.seconds:.1f}s, store version {report.version_before} -> {report.version_after})"
    )
    columns = report.annotated_columns
    if columns and "label" not in columns:
        typer.echo(f"note: the labels file has no `label` column (it has {', '.join(columns)}); training "
                   f"and `info` read `label`: rename the column, or pass --label {columns[0]} to "
                   "`emofs train head`", err=True)
    unmatched = report.unmatched_labels
    if unmatched:
        examples = ", ".join(k for _, k in unmatched[:5])
        lines = ", ".join(str(n) for n, _ in unmatched[:5])
        typer.echo(
            f"{len(unmatched)} label rows matched no clip "
            f"(lines {lines}: {examples}{', ...' if len(unmatched) > 5 else ''})"
            + ("; none matched: a path column is read relative to the ingested folder or to the "
               "CSV's folder (or absolute); a clip_id or name (file stem) column also works"
               if not report.annotated and not report.annotated_columns else ""),
            err=True,
        )
    if report.ambiguous_labels:
        typer.echo(
            f"{len(report.ambiguous_labels)} label rows name several clips and were skipped "
            f"(e.g. {', '.join(report.ambiguous_labels[:5])}): use a path or clip_id column",
            err=True,
        )


# -------------------------------------------------------------------------- info
def info_command(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Summarise the store: clips by modality and label, feature sets, indexes, errors.

    Examples:
      emofs info
      emofs info --json | jq .labels
    """
    from featurestore import store_info

    summary = store_info(open_store(store))
    if as_json:
        echo_json(summary)
        return
    _print_info(summary)


def _print_info(summary: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console()
    console.print(f"[bold]store[/bold] {summary['store']}  version {summary['version']}  "
                  f"{human_bytes(summary['size_bytes'])}")
    mods = summary["modalities"]
    console.print(
        f"[bold]clips[/bold] {summary['clips']}  (audio+video {mods['audio+video']}, "
        f"video only {mods['video']}, audio only {mods['audio']}"
        + (f", no media {mods['none']}" if mods.get("none") else "") + ")"
    )
    if summary["labels"]:
        console.print("[bold]labels[/bold] " + _labels_line(summary["labels"]))
    if summary["features"]:
        console.print(_feature_table(summary["features"]))
    else:
        console.print("[bold]features[/bold] none yet (run `emofs extract`)")
    if summary["indexes"]:
        described = [
            f"{name} ({m.get('kind', '?')}, {m.get('rows', '?')} rows"
            + (", fused " + "+".join(m["encoders"]) if m.get("fused") else "") + ")"
            for name, m in summary["indexes"].items()
        ]
        console.print("[bold]indexes[/bold] " + ", ".join(described))
    if summary["predictions"]:
        console.print("[bold]predictions[/bold] " + ", ".join(summary["predictions"]))
    errors = summary["errors"]
    stages = ", ".join(f"{k} {v}" for k, v in summary["errors_by_stage"].items())
    console.print(f"[bold]errors[/bold] {errors}" + (f" ({stages}; see `emofs errors`)" if errors else ""))


#: Labels ``emofs info`` names (most frequent first) and characters shown of each.
_INFO_LABELS, _LABEL_CHARS = 30, 60


def _labels_line(labels: dict[str, int]) -> str:
    """``sad 12, happy 9, ...``: the most frequent labels, each cut to a readable length
    (a free-text column used as --label must not flood the summary)."""
    from rich.markup import escape

    def short(text: str) -> str:
        return text if len(text) <= _LABEL_CHARS else text[:_LABEL_CHARS - 1] + "…"

    shown = [f"{escape(short(str(k)))} {v}" for k, v in list(labels.items())[:_INFO_LABELS]]
    rest = len(labels) - _INFO_LABELS
    return ", ".join(shown) + (f", … {rest} more (`emofs info --json`)" if rest > 0 else "")


def _feature_table(features: dict[str, Any]):
    from rich.table import Table

    table = Table("feature set", "rows", "dim", "dtype", "tokens", "weights", title=None)
    for name, fs in features.items():
        spec = fs.get("spec") or {}
        table.add_row(name, str(fs["rows"]), str(fs["dim"]), str(fs["dtype"]),
                      "yes" if fs["has_tokens"] else "no", str(spec.get("weights", "")))
    return table


# ------------------------------------------------------------------ clips, errors
def clips_command(
    where: WhereOpt = None,
    fmt: FormatOpt = "table",
    limit: Annotated[Optional[int], typer.Option("--limit", "-n", help="At most N rows.")] = None,
    columns: Annotated[
        Optional[str], typer.Option("--columns", help="Comma-separated columns to show.")
    ] = None,
    store: StoreOpt = None,
) -> None:
    """List clips (all columns in json/csv; a short table otherwise).

    Examples:
      emofs clips --where "label = 'sad' AND modality = 'audio+video'"
      emofs clips --format csv --limit 100 > clips.csv
    """
    check_format(fmt)
    wanted = csv_list(columns, "--columns") or None
    frame = open_store(store).clips(where=where, limit=limit, columns=wanted)
    print_frame(frame, fmt, default_columns=_CLIP_COLUMNS)


def errors_command(where: WhereOpt = None, fmt: FormatOpt = "table", store: StoreOpt = None) -> None:
    """List files that failed a stage (ingest, decode, encode), with the reason.

    Examples:
      emofs errors --where "stage = 'ingest'"
    """
    check_format(fmt)
    frame = open_store(store).errors(where=where).drop("error_key")
    print_frame(frame, fmt, default_columns=_ERROR_COLUMNS)


# ------------------------------------------------------------------------ vacuum
def vacuum_command(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Delete files of versions older than this: 0, 30m, 12h, 7d.")
    ] = "1h",
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compact every dataset and delete the files only old versions still use.

    Batch commits and compaction leave replaced files behind for Lance's version history;
    this reclaims them. The current data is never touched; other writers wait for the
    dataset being vacuumed (the store's write lock).

    Examples:
      emofs vacuum                 # versions older than an hour
      emofs vacuum --older-than 0  # everything but the current version
    """
    from featurestore.maintenance import parse_age, vacuum

    age = parse_age(older_than)  # a bad --older-than fails before the store is opened
    target = open_store(store)
    report = vacuum(target, age)
    if as_json:
        echo_json(report.as_dict())
        return
    for row in report.datasets:
        typer.echo(f"  {row.dataset:<32} {row.bytes_before / 2**20:8.1f} -> {row.bytes_after / 2**20:.1f} MiB, "
                   f"fragments {row.fragments_before} -> {row.fragments_after}, "
                   f"{row.versions_removed} old versions removed")
    typer.echo(f"store {target.uri}: {report.bytes_before / 2**20:.1f} MiB -> "
               f"{report.bytes_after / 2**20:.1f} MiB")


# ------------------------------------------------------------------------- check
def check_command(
    repair: Annotated[
        bool, typer.Option("--repair", help="Remove duplicate and orphan rows, rebuild damaged indexes, "
                                            "reconcile corrections with the clips.")
    ] = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check the store: duplicate keys, feature rows without a clip, damaged index files,
    indexes that drifted from their feature sets, corrections the clips do not show.

    With --repair, keeps the newest row of each duplicated key, deletes orphan feature and
    prediction rows, rebuilds damaged indexes and gives a clip the value of a correction
    cut short (under the store's write lock). Exits 1 while problems remain.

    Examples:
      emofs check
      emofs check --repair --json
    """
    from featurestore.check import check_store, repair_store

    target = open_store(store)
    report = repair_store(target) if repair else check_store(target)
    if as_json:
        echo_json(report.as_dict())
    else:
        done = report.repaired
        if done:
            typer.echo(f"repaired: {sum(done['duplicate_rows_removed'].values())} duplicate rows and "
                       f"{sum(done['orphan_rows_removed'].values())} orphan rows removed, "
                       f"{len(done['indexes_rebuilt'])} indexes rebuilt")
            if done.get("nonfinite_rows_quarantined"):
                typer.echo(f"quarantined: {sum(done['nonfinite_rows_quarantined'].values())} feature rows "
                           "holding NaN or inf (errors rows say so; `emofs extract` redoes them)")
            if done.get("corrections"):
                fixed = done["corrections"]
                typer.echo(f"corrections: {fixed['rolled_forward']} rolled forward onto the clips, "
                           f"{fixed['recorded']} later changes recorded, {fixed['undos_marked']} undos marked")
            for note in done["notes"]:
                typer.echo(note, err=True)
        problems = report.problems()
        for line in problems:
            typer.echo(f"  {line}")
        count = f"{len(problems)} problem" + ("s" if len(problems) > 1 else "")
        typer.echo(f"store {report.store}: " + (count if problems else "ok"))
    if not report.ok:
        raise typer.Exit(1)


# ----------------------------------------------------------------------- samples
def samples_command(
    folder: Annotated[Path, typer.Argument(help="Folder to write the clips and labels.csv into.")],
    per_label: Annotated[int, typer.Option("--per-label", help="Clips per label and kind.")] = 3,
) -> None:
    """Write synthetic sample clips (drawn faces + tones) for a demo without real data.

    Examples:
      emofs samples demo-clips && emofs ingest demo-clips --labels demo-clips/labels.csv
    """
    from extractors.samples import write_sample_clips

    if per_label < 1:
        raise InputError(f"--per-label must be >= 1 (got {per_label})")
    labels = write_sample_clips(folder, per_label=per_label)
    typer.echo(f"wrote sample clips and {labels}")
