"""The `emofs` command line: parse, validate flag combinations, call one library function.

Errors raised on purpose (:class:`featurestore.EmofsError`) print as one line and exit 1;
``EMOFS_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, List, Optional

import typer
from typer.core import TyperGroup

from featurestore.errors import EmofsError, InputError

__all__ = ["app"]


class _EmofsGroup(TyperGroup):
    """Maps emofs' typed exceptions to one line on stderr and exit code 1."""

    def invoke(self, ctx):  # noqa: D401 - click API
        try:
            return super().invoke(ctx)
        except EmofsError as exc:
            if os.environ.get("EMOFS_DEBUG") == "1":
                raise
            typer.echo(f"error: {exc}", err=True)
            ctx.exit(1)


app = typer.Typer(
    cls=_EmofsGroup,
    help="emofs: an offline feature store and trainer for multimodal emotion recognition.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# ----------------------------------------------------------------- shared options
StoreOpt = Annotated[
    Optional[str],
    typer.Option(
        "--store",
        envvar="EMOFS_STORE",
        help="Store directory or object-store URI. [default: ./emofs-store]",
        show_default=False,
    ),
]
WhereOpt = Annotated[
    Optional[str],
    typer.Option("--where", help="SQL filter on clip columns, e.g. \"label = 'sad'\"."),
]
FormatOpt = Annotated[
    str, typer.Option("--format", "-f", help="Output format: table, json or csv.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
_FORMATS = ("table", "json", "csv")


def _check_format(value: str) -> str:
    if value not in _FORMATS:
        raise InputError(f"--format must be one of {', '.join(_FORMATS)} (got {value!r})")
    return value


def _open_store(store: str | None, *, create: bool = False):
    from featurestore import Store

    return Store(store, create=create)


# ------------------------------------------------------------------------ ingest
@app.command()
def ingest(
    paths: Annotated[List[Path], typer.Argument(help="Folders (walked recursively) or media files.")],
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
    from extractors import ingest as run_ingest

    report = run_ingest(
        paths, _open_store(store, create=True), labels=labels, batch_size=batch_size,
        workers=workers,
    )
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
        return
    typer.echo(
        f"{report.files} files: {report.new} new, {report.updated} updated, "
        f"{report.unchanged} unchanged, {len(report.errors)} unreadable; "
        f"{report.annotated} clips got new labels ({report.seconds:.1f}s, "
        f"store version {report.version_before} -> {report.version_after})"
    )
    if report.unmatched_labels:
        examples = ", ".join(k for _, k in report.unmatched_labels[:5])
        lines = ", ".join(str(n) for n, _ in report.unmatched_labels[:5])
        typer.echo(
            f"{len(report.unmatched_labels)} label rows matched no clip "
            f"(lines {lines}: {examples}{', ...' if len(report.unmatched_labels) > 5 else ''})",
            err=True,
        )
    if report.ambiguous_labels:
        typer.echo(
            f"{len(report.ambiguous_labels)} label rows name several clips and were skipped "
            f"(e.g. {', '.join(report.ambiguous_labels[:5])}): use a path or clip_id column",
            err=True,
        )


# -------------------------------------------------------------------------- info
@app.command()
def info(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Summarise the store: clips by modality and label, feature sets, indexes, errors.

    Examples:
      emofs info
      emofs info --json | jq .labels
    """
    from featurestore import store_info

    summary = store_info(_open_store(store))
    if as_json:
        typer.echo(json.dumps(summary, default=str))
        return
    _print_info(summary)


def _print_info(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]store[/bold] {summary['store']}  version {summary['version']}  "
                  f"{_human_bytes(summary['size_bytes'])}")
    mods = summary["modalities"]
    console.print(
        f"[bold]clips[/bold] {summary['clips']}  (audio+video {mods['audio+video']}, "
        f"video only {mods['video']}, audio only {mods['audio']}"
        + (f", no media {mods['none']}" if mods.get("none") else "") + ")"
    )
    if summary["labels"]:
        console.print("[bold]labels[/bold] " + ", ".join(f"{k} {v}" for k, v in summary["labels"].items()))
    if summary["features"]:
        table = Table("feature set", "rows", "dim", "dtype", "tokens", "weights", title=None)
        for name, fs in summary["features"].items():
            spec = fs.get("spec") or {}
            table.add_row(name, str(fs["rows"]), str(fs["dim"]), str(fs["dtype"]),
                          "yes" if fs["has_tokens"] else "no", str(spec.get("weights", "")))
        console.print(table)
    else:
        console.print("[bold]features[/bold] none yet (run `emofs extract`)")
    if summary["indexes"]:
        console.print("[bold]indexes[/bold] " + ", ".join(summary["indexes"]))
    if summary["predictions"]:
        console.print("[bold]predictions[/bold] " + ", ".join(summary["predictions"]))
    errors = summary["errors"]
    stages = ", ".join(f"{k} {v}" for k, v in summary["errors_by_stage"].items())
    console.print(f"[bold]errors[/bold] {errors}" + (f" ({stages}; see `emofs errors`)" if errors else ""))


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


# ------------------------------------------------------------------------- clips
_TABLE_COLUMNS = ["clip_id", "modality", "duration_s", "label", "speaker", "split"]


@app.command()
def clips(
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
    _check_format(fmt)
    wanted = [c.strip() for c in columns.split(",")] if columns else None
    frame = _open_store(store).clips(where=where, limit=limit, columns=wanted)
    _print_frame(frame, fmt, default_columns=_TABLE_COLUMNS)


@app.command()
def errors(where: WhereOpt = None, fmt: FormatOpt = "table", store: StoreOpt = None) -> None:
    """List files that failed a stage (ingest, decode, encode), with the reason.

    Examples:
      emofs errors --where "stage = 'ingest'"
    """
    _check_format(fmt)
    frame = _open_store(store).errors(where=where).drop("error_key")
    _print_frame(frame, fmt, default_columns=["stage", "encoder", "uri", "message"])


def _print_frame(frame, fmt: str, *, default_columns: list[str]) -> None:
    """Print a polars DataFrame as a rich table, JSON array or CSV on stdout."""
    if fmt == "json":
        typer.echo(json.dumps(frame.to_dicts(), default=str))
        return
    if fmt == "csv":
        sys.stdout.write(frame.write_csv())
        return
    from rich.console import Console
    from rich.table import Table

    shown = [c for c in default_columns if c in frame.columns] or frame.columns
    table = Table(*shown)
    for row in frame.select(shown).iter_rows():
        table.add_row(*["" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v)) for v in row])
    Console().print(table)
    typer.echo(f"{frame.height} rows", err=True)


# ----------------------------------------------------------------------- samples
@app.command()
def samples(
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


if __name__ == "__main__":  # pragma: no cover
    app()
