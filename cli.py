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
        from commands import console

        console.attach()
        try:
            return super().invoke(ctx)
        except EmofsError as exc:
            if os.environ.get("EMOFS_DEBUG") == "1":
                raise
            typer.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        finally:
            console.detach()


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


def _csv_list(value: str | None, flag: str = "this option") -> list[str]:
    """Parse a comma-separated flag value; None, '' and 'none' give an empty list."""
    if value is None or value.strip().lower() in ("", "none"):
        return []
    items = [v.strip() for v in value.split(",")]
    if not all(items):
        raise InputError(f"{flag} takes a comma-separated list without empty items (got {value!r})")
    return items


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
    wanted = _csv_list(columns, "--columns") or None
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
    table = Table()
    for column in shown:
        table.add_column(column, overflow="fold")
    for row in frame.select(shown).iter_rows():
        table.add_row(*["" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v)) for v in row])
    # Piped into a file or a pager, a table wrapped at rich's default 80 columns is
    # unreadable: give it room (a terminal keeps its own width).
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    typer.echo(f"{frame.height} rows", err=True)


# ------------------------------------------------------------------------- index
index_app = typer.Typer(cls=_EmofsGroup, no_args_is_help=True)
app.add_typer(
    index_app, name="index",
    help="FAISS indexes over feature sets (cosine): build / update, list, drop.",
)


@index_app.command("build")
def index_build(
    encoder: Annotated[Optional[str], typer.Option("--encoder", "-e", help="Feature set to index.")] = None,
    fused: Annotated[
        Optional[str], typer.Option("--fused", help="Comma-separated feature sets fused into one index.")
    ] = None,
    weights: Annotated[
        Optional[str], typer.Option("--weights", help="Per-encoder weights for --fused, e.g. 1,0.5.")
    ] = None,
    kind: Annotated[str, typer.Option("--kind", help="auto, flat, ivf or hnsw.")] = "auto",
    name: Annotated[
        Optional[str], typer.Option("--name", help="Index name (default: the encoder, or a+b).")
    ] = None,
    recall: Annotated[float, typer.Option("--recall", help="recall@10 target for ivf/hnsw tuning.")] = 0.95,
    nlist: Annotated[Optional[int], typer.Option("--nlist", help="IVF lists (default: 4*sqrt(N)).")] = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Rebuild from scratch.")] = False,
    standardize: Annotated[
        bool,
        typer.Option("--standardize/--no-standardize",
                     help="Z-score each dimension (indexed rows' mean/std) before the cosine."),
    ] = True,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build an index, or add the clips extracted since it was built.

    A changed encoder spec, weights or kind rebuilds it from scratch (and says why).

    Examples:
      emofs index build --encoder egemaps
      emofs index build --fused hubert,eva --weights 1,0.5 --kind hnsw
    """
    from featurestore.index import IndexConfig, build_index

    if bool(encoder) == bool(fused):
        raise InputError("pass exactly one of --encoder NAME or --fused A,B")
    encoders = [encoder] if encoder else _csv_list(fused, "--fused")
    if weights is not None and not fused:
        raise InputError("--weights goes with --fused A,B (one weight per encoder)")
    try:
        parsed = [float(w) for w in _csv_list(weights, "--weights")] if weights else None
    except ValueError as exc:
        raise InputError(f"--weights must be numbers, e.g. 1,0.5 (got {weights!r})") from exc
    config = IndexConfig(encoders, parsed, kind=kind, name=name, recall=recall, nlist=nlist,
                         rebuild=rebuild, standardize=standardize)
    report = build_index(_open_store(store), config)
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
        return
    why = f" ({report.reason})" if report.reason else ""
    tuned = ", ".join(f"{k}={v}" for k, v in report.params.items()
                      if k in ("nlist", "nprobe", "M", "efSearch", "tuned_recall_at_10"))
    typer.echo(
        f"index {report.name}: {report.mode}{why}, {report.kind}, {report.rows} rows "
        f"(+{report.added}), dim {report.dim}" + (f", {tuned}" if tuned else "")
        + f" in {report.seconds:.1f}s"
    )


@index_app.command("list")
def index_list(fmt: FormatOpt = "table", store: StoreOpt = None) -> None:
    """List the store's indexes: kind, encoders, rows, when built, and whether stale.

    Examples:
      emofs index list
      emofs index list --format json
    """
    import polars as pl

    from featurestore.index import list_indexes

    _check_format(fmt)
    rows = list_indexes(_open_store(store))
    frame = pl.DataFrame(rows) if rows else pl.DataFrame(
        schema={c: pl.Utf8 for c in ("name", "kind", "encoders", "rows", "status")})
    _print_frame(frame, fmt, default_columns=["name", "kind", "encoders", "weights", "rows", "dim",
                                              "updated_at", "status"])


@index_app.command("drop")
def index_drop(
    name: Annotated[str, typer.Argument(help="Index name (see `emofs index list`).")],
    store: StoreOpt = None,
) -> None:
    """Delete an index (its .faiss, id map and manifest); feature sets are untouched.

    Examples:
      emofs index drop egemaps
    """
    from featurestore.index import drop_index

    removed = drop_index(_open_store(store), name)
    typer.echo(f"dropped index {name} ({len(removed)} files)")


# ----------------------------------------------------------------------- similar
@app.command()
def similar(
    query: Annotated[str, typer.Argument(help="A clip_id, a path in the store, or a new media file.")],
    k: Annotated[int, typer.Option("-k", "--k", help="Number of neighbours.")] = 10,
    index: Annotated[
        Optional[str], typer.Option("--index", help="Index name (default: the only one, or the newest).")
    ] = None,
    where: WhereOpt = None,
    include_self: Annotated[bool, typer.Option("--include-self", help="Keep the query clip.")] = False,
    add: Annotated[bool, typer.Option("--add", help="Store a new media file and its features.")] = False,
    fmt: FormatOpt = "table",
    store: StoreOpt = None,
) -> None:
    """Clips that feel like QUERY: rank, clip_id, path, label, cosine score, label vote.

    Examples:
      emofs similar crema_d/mp4/1001_DFA_SAD_XX.mp4 -k 5
      emofs similar 03-01-04-01-01-01-05.mp4 --where "label = 'sad' AND split = 'train'"
      emofs similar new.mp4 --index hubert+eva --add --format json
    """
    from featurestore.similar import find_similar

    _check_format(fmt)
    result = find_similar(_open_store(store), query, k=k, index=index, where=where,
                          include_self=include_self, add=add)
    for note in result.notes:
        if note.startswith("using index"):
            typer.echo(note, err=True)
    frame = result.frame
    # The path column only earns its width where it says more than the clip id.
    same_path = frame.height and (frame["path"] == frame["clip_id"]).all()
    columns = ["rank", "clip_id", "label", "score"] if same_path else ["rank", "clip_id", "path", "label", "score"]
    _print_frame(frame, fmt, default_columns=columns)
    vote = result.vote()
    if vote:
        typer.echo(vote, err=fmt != "table")


# ---------------------------------------------------------------- import / export
import_app = typer.Typer(cls=_EmofsGroup, no_args_is_help=True)
export_app = typer.Typer(cls=_EmofsGroup, no_args_is_help=True)
app.add_typer(
    import_app, name="import",
    help="Import Emotion-LLaMA / MERTools feature folders and annotation files.",
)
app.add_typer(
    export_app, name="export",
    help="Export feature sets as the .npy folders Emotion-LLaMA (or MERTools) reads.",
)
_LayoutOpt = Annotated[
    str, typer.Option("--layout", help="emotion-llama (HL-UTT/, mae_340_UTT/, ...) or mertools (<model>-UTT/-FRA).")
]


def _examples(items: list, total: int) -> str:
    shown = ", ".join(map(str, items[:5]))
    return shown + (", ..." if total > 5 else "")


@import_app.command("features")
def import_features_cmd(
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
        _open_store(store, create=True), folder, layout=layout, name=as_name, where=where,
        create_missing=create_missing, replace=replace, workers=workers,
    )
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in reports]))
        return
    for r in reports:
        typer.echo(
            f"{r.feature_set}: {r.imported} of {r.files} files imported from {r.folder} "
            f"(dim {r.dim}, {r.dtype}, {r.level} level), {r.created} clip rows created, "
            f"{len(r.skipped)} skipped ({r.seconds:.1f}s)"
        )
        if r.unmatched:
            typer.echo(
                f"  {len(r.unmatched)} names matched no clip and were not imported (e.g. "
                f"{_examples(r.unmatched, len(r.unmatched))}): pass --create-missing to add them",
                err=True,
            )
        if r.ambiguous:
            typer.echo(
                f"  {len(r.ambiguous)} names match several clips and were skipped (e.g. "
                f"{_examples(r.ambiguous, len(r.ambiguous))}): narrow the clips with --where",
                err=True,
            )


@import_app.command("annotations")
def import_annotations_cmd(
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

    r = import_annotations(_open_store(store, create=True), file, fmt=fmt, where=where,
                           create_missing=create_missing)
    if as_json:
        typer.echo(json.dumps(r.as_dict()))
        return
    typer.echo(
        f"{r.file} ({r.format}): {r.rows} rows, {r.annotated} clips annotated "
        f"({', '.join(r.columns) or 'no columns'}), {r.created} clip rows created, "
        f"{len(r.skipped)} lines skipped (store version {r.version})"
    )
    if r.unmatched:
        typer.echo(f"  {len(r.unmatched)} names matched no clip (e.g. "
                   f"{_examples(r.unmatched, len(r.unmatched))})", err=True)
    if r.ambiguous:
        typer.echo(f"  {len(r.ambiguous)} names match several clips and were skipped (e.g. "
                   f"{_examples(r.ambiguous, len(r.ambiguous))}): narrow with --where", err=True)


@export_app.command("features")
def export_features_cmd(
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
        _open_store(store), folder, layout=layout, encoders=_csv_list(encoders, "--encoders") or None,
        where=where, annotations=annotations, annotation_file=annotation_file,
        overwrite=overwrite, workers=workers,
    )
    if as_json:
        typer.echo(json.dumps(r.as_dict()))
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


# --------------------------------------------------------------------------- llm
llm_app = typer.Typer(
    cls=_EmofsGroup,
    no_args_is_help=True,
    help="LoRA LLaMA instruction tuning from cached features: train, ask, eval.",
)
app.add_typer(llm_app, name="llm")


@llm_app.command("train")
def llm_train(
    base: Annotated[str, typer.Option("--base", help="Hub id or local directory of a LLaMA-family causal LM.")],
    out: Annotated[
        Optional[Path], typer.Option("--out", help="Run directory to create. [default: runs/llm-<time>]")
    ] = None,
    encoders: Annotated[
        str, typer.Option("--encoders", help="Feature sets giving one <FeatureHere> token each ('none': no such tokens).")
    ] = "mae,videomae,hubert,eva",
    video: Annotated[str, typer.Option("--video", help="Feature set whose tokens fill <VideoHere> ('none' to skip).")] = "eva",
    task: Annotated[str, typer.Option("--task", help="Tasks and mix: emotion | emotion,reason | emotion=0.7,reason=0.3.")] = "emotion",
    epochs: Annotated[int, typer.Option("--epochs")] = 3,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Stop after N steps (overrides --epochs).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 4,
    lr: Annotated[float, typer.Option("--lr")] = 1e-4,
    lora_r: Annotated[int, typer.Option("--lora-r")] = 64,
    lora_alpha: Annotated[int, typer.Option("--lora-alpha")] = 16,
    lora_dropout: Annotated[float, typer.Option("--lora-dropout")] = 0.05,
    lora_targets: Annotated[str, typer.Option("--lora-targets", help="Comma-separated module names.")] = "q_proj,v_proj",
    merge: Annotated[int, typer.Option("--merge", help="Adjacent video tokens merged into one (MiniGPT-v2: 4).")] = 4,
    max_video_tokens: Annotated[Optional[int], typer.Option("--max-video-tokens")] = None,
    labels: Annotated[Optional[str], typer.Option("--labels", help="Label set (default: the clips' labels).")] = None,
    where: WhereOpt = None,
    description_column: Annotated[str, typer.Option("--description-column", help="Clip column with reasoning answers.")] = "description",
    precision: Annotated[str, typer.Option("--precision", help="auto, 32, bf16 or 16.")] = "auto",
    gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing")] = False,
    projectors_from: Annotated[Optional[str], typer.Option("--projectors-from", help="Head run to initialise projectors.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train LoRA adapters + projectors from the store's cached features (Lightning).

    Saves adapter/ (safetensors), projectors.safetensors, config.json and metrics.csv.

    Examples:
      emofs llm train --base meta-llama/Llama-2-7b-chat-hf --out runs/llm1
      emofs llm train --base ./tiny-llama --encoders mae,hubert --video none --task emotion,reason --out runs/t
    """
    from llm import LLMConfig, parse_tasks, train

    config = LLMConfig(
        base=base, feature_encoders=tuple(_csv_list(encoders, "--encoders")), video_encoder=(_csv_list(video, "--video") or [None])[0],
        tasks=parse_tasks(task), epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr,
        lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
        target_modules=tuple(_csv_list(lora_targets, "--lora-targets")), merge=merge, max_video_tokens=max_video_tokens,
        labels=_csv_list(labels, "--labels") or None, where=where, description_column=description_column,
        precision=precision, gradient_checkpointing=gradient_checkpointing,
        projectors_from=projectors_from, seed=seed,
    )
    if out is None:
        import time as _time

        out = Path("runs") / _time.strftime("llm-%Y%m%d-%H%M%S")
    result = train(_open_store(store), config, out, progress=not as_json)
    if as_json:
        typer.echo(json.dumps(result.as_dict(), default=str))
        return
    loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
    typer.echo(f"trained {result.steps} steps on {result.clips} clips in {result.seconds:.1f}s "
               f"(final loss {loss}, {result.trainable_params:,} trainable parameters) -> {result.run_dir}")


@llm_app.command("ask")
def llm_ask(
    target: Annotated[str, typer.Argument(help="A clip_id in the store, or a media file (extracted on the fly).")],
    run: Annotated[Path, typer.Option("--run", help="An `emofs llm train` run directory.")],
    question: Annotated[Optional[str], typer.Option("--question", help="Replace the task instruction.")] = None,
    task: Annotated[str, typer.Option("--task", help="emotion or reason.")] = "emotion",
    subtitle: Annotated[Optional[str], typer.Option("--subtitle", help="What the person says (default: the clip's).")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens")] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the run's answer for one clip (greedy decoding).

    Examples:
      emofs llm ask crema_d/mp4/1001_DFA_ANG_XX --run runs/llm1
      emofs llm ask new.mp4 --run runs/llm1 --task reason
    """
    from workflows.ask import ask

    if max_new_tokens is not None and max_new_tokens < 1:
        raise InputError(f"--max-new-tokens must be >= 1 (got {max_new_tokens})")
    result = ask(run, target, _open_store(store), question=question, task=task, subtitle=subtitle,
                 max_new_tokens=max_new_tokens)
    typer.echo(json.dumps(result) if as_json else result["answer"])


@llm_app.command("eval")
def llm_eval(
    run: Annotated[Path, typer.Argument(help="An `emofs llm train` run directory.")],
    where: WhereOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16,
    out: Annotated[Optional[Path], typer.Option("--out", help="Report folder [default: RUN/eval].")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens")] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Generate answers for labelled clips; report accuracy, weighted F1, UAR, WAR, confusion.

    Examples:
      emofs llm eval runs/llm1 --where "split = 'test'"
    """
    from llm import evaluate

    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1 (got {batch_size})")
    result = evaluate(run, _open_store(store), where=where, batch_size=batch_size, out_dir=out,
                      max_new_tokens=max_new_tokens, progress=not as_json)
    if as_json:
        typer.echo(json.dumps(result.as_dict()))
        return
    m = result.metrics
    typer.echo(f"{result.n} clips: accuracy {m['accuracy']:.3f}  weighted F1 {m['weighted_f1']:.3f}  "
               f"UAR {m['uar']:.3f}  WAR {m['war']:.3f}  ({result.unmatched} answers named no label) "
               f"-> {result.out_dir}")


@llm_app.command("tiny")
def llm_tiny(
    folder: Annotated[Path, typer.Argument(help="Folder to write the tiny model and tokenizer into.")],
    labels: Annotated[Optional[str], typer.Option("--labels", help="Label words (default: the store's labels).")] = None,
    no_chat_template: Annotated[bool, typer.Option("--no-chat-template", help="Use the [INST] fallback.")] = False,
    store: StoreOpt = None,
) -> None:
    """Build a tiny random LLaMA + tokenizer offline (for demos and tests; not a real model).

    Examples:
      emofs llm tiny tiny-llama && emofs llm train --base tiny-llama --out runs/demo
    """
    from llm.tiny import build_tiny_llama

    words = _csv_list(labels, "--labels")
    texts: list[str] = []
    if not words or store:
        clips_frame = _open_store(store).clips(columns=["label", "subtitle", "description"])
        words = words or sorted({x for x in clips_frame["label"].to_list() if x})
        texts = [x for c in ("subtitle", "description") for x in set(clips_frame[c].to_list()) if x]
    if not words:
        raise InputError("no label words: pass --labels happy,sad,... or a --store with labelled clips")
    path = build_tiny_llama(folder, words, extra_text=texts, chat_template=not no_chat_template)
    typer.echo(f"wrote a tiny LLaMA ({len(words)} label words) to {path}")


# ----------------------------------------------------------------------- extract
@app.command("extract")
def extract_command(
    encoders: Annotated[
        str,
        typer.Option("--encoders", "-e", help="Comma-separated NAME[:WEIGHTS] (tag, hub id or directory)."),
    ] = "hubert,mae,videomae,eva",
    where: WhereOpt = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Clips per encoder batch and commit.")] = 16,
    workers: Annotated[
        str, typer.Option("--workers", help="Decoding processes: auto (one per core; all but one with a GPU) or N (0: in-process).")
    ] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="Stored float type: float16 or float32.")] = "float16",
    tokens: Annotated[
        Optional[str], typer.Option("--tokens", help="Token counts per encoder, e.g. eva=64,hubert=32.")
    ] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run frozen encoders over the store's clips once; reruns skip what is up to date.

    Each clip is decoded once for all encoders (worker processes), encoders run batched,
    results are upserted per batch (a killed run resumes). Failures go to errors.lance.

    Examples:
      emofs extract --encoders hubert:tiny,mae:tiny,videomae:tiny,eva:tiny,egemaps
      emofs extract --encoders eva:/models/eva-g --tokens eva=64 --where "split = 'train'"
    """
    from extractors import extract as run_extract

    token_counts: dict[str, int] = {}
    for part in _csv_list(tokens, "--tokens"):
        name, sep, value = part.partition("=")
        if not sep or not value.strip().isdigit():
            raise InputError(f"--tokens takes NAME=COUNT pairs, e.g. eva=64,hubert=32 (got {part!r})")
        token_counts[name.strip()] = int(value)
    report = run_extract(
        _open_store(store), _csv_list(encoders, "--encoders"), where=where,
        device=device, batch_size=batch_size, workers=workers, dtype=dtype, tokens=token_counts,
    )
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
        return
    typer.echo(
        f"{report.clips} clips, {report.decoded} decoded ({report.clips_per_s:.1f} clips/s), "
        f"{report.decode_errors} failed to decode, {report.seconds:.1f}s on {report.device}"
    )
    for name, enc in report.encoders.items():
        typer.echo(
            f"  {name:<9} {enc.extracted} extracted, {enc.up_to_date} up to date, "
            f"{enc.not_applicable} not applicable, {enc.failed} failed"
        )
    if report.bottleneck:
        typer.echo(f"bottleneck: {report.bottleneck}")
    if report.errors:
        typer.echo(f"{len(report.errors)} failures recorded: see `emofs errors`", err=True)


@app.command("encoders")
def encoders_command(fmt: FormatOpt = "table") -> None:
    """List the encoder registry: tags, modality, dim, default weights, availability.

    Examples:
      emofs encoders
      emofs encoders --format json
    """
    import polars as pl

    from extractors import encoder_table

    _check_format(fmt)
    frame = pl.DataFrame(encoder_table())
    if fmt == "table":  # the default tag starred instead of a true/false column
        frame = frame.with_columns(
            pl.when(pl.col("default")).then(pl.col("tag") + " *").otherwise(pl.col("tag")).alias("tag"),
            pl.when(pl.col("available")).then(pl.lit("yes")).otherwise(pl.lit("no")).alias("local"),
        )
    _print_frame(frame, fmt, default_columns=["encoder", "tag", "modality", "dim", "token_dim",
                                              "weights", "local"])
    if fmt == "table":
        typer.echo("* default tag; local: weights on this machine (tiny / none need none)", err=True)


# ------------------------------------------------------------------------- heads
train_app = typer.Typer(cls=_EmofsGroup, no_args_is_help=True,
                        help="Train models from cached features (no encoder runs).")
app.add_typer(train_app, name="train")

_EncodersOpt = Annotated[str, typer.Option("--encoders", "-e", help="Comma-separated feature sets to fuse.")]
_LabelOpt = Annotated[str, typer.Option("--label", help="Clip column holding the class.")]
_SplitByOpt = Annotated[
    Optional[str],
    typer.Option("--split-by", help="Group column for a group split, e.g. speaker (speaker-independent)."),
]
_FoldsOpt = Annotated[int, typer.Option("--folds", help="Group k-fold with K folds (needs --split-by); 0: one split.")]
_FoldOpt = Annotated[int, typer.Option("--fold", help="Test fold of --folds (the next fold validates).")]
_FusionOpt = Annotated[str, typer.Option("--fusion", help="concat or attention (softmax over modalities).")]
_HiddenOpt = Annotated[int, typer.Option("--hidden", help="Projector width (Emotion-LLaMA: 4096).")]
_DropoutOpt = Annotated[float, typer.Option("--dropout", help="Dropout on projected features.")]
_EpochsOpt = Annotated[int, typer.Option("--epochs", help="Maximum epochs (early stopping may end sooner).")]
_LrOpt = Annotated[float, typer.Option("--lr", help="AdamW learning rate.")]
_BatchOpt = Annotated[int, typer.Option("--batch-size", help="Clips per step.")]
_SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of split, weights and shuffling.")]
_PatienceOpt = Annotated[int, typer.Option("--patience", help="Epochs without improvement before stopping.")]
_MonitorOpt = Annotated[str, typer.Option("--monitor", help="Validation figure: weighted_f1, macro_f1, uar, accuracy.")]
_ClassWeightsOpt = Annotated[
    bool, typer.Option("--class-weights/--no-class-weights", help="Inverse-frequency class weights in the loss.")
]
_StandardizeOpt = Annotated[
    bool, typer.Option("--standardize/--no-standardize", help="Z-score inputs with train-set statistics.")
]
_DropMissingOpt = Annotated[
    bool, typer.Option("--drop-missing", help="Drop clips lacking a feature set (reported) instead of failing.")
]
_PreloadOpt = Annotated[str, typer.Option("--preload", help="auto (if it fits in memory), always or never (stream).")]
_WorkersOpt = Annotated[int, typer.Option("--workers", help="Loader processes when streaming (spawn).")]
_MaxStepsOpt = Annotated[int, typer.Option("--max-steps", help="Stop after N steps (-1: no limit).")]
_ThreadsOpt = Annotated[int, typer.Option("--threads", help="Torch CPU threads (0: torch default; 1 is often faster on a busy CPU).")]
_OutOpt = Annotated[Optional[Path], typer.Option("--out", help="Run directory. [default: runs/<time>-<encoders>]")]
_RunArg = Annotated[Path, typer.Argument(help="A run directory written by `emofs train head`.")]


def _head_config(**flags: Any):
    from heads.config import HeadConfig

    return HeadConfig(**flags)


@train_app.command("head")
def train_head_cmd(
    encoders: _EncodersOpt,
    label: _LabelOpt = "label",
    where: WhereOpt = None,
    split_by: _SplitByOpt = None,
    folds: _FoldsOpt = 0,
    fold: _FoldOpt = 0,
    fusion: _FusionOpt = "concat",
    hidden: _HiddenOpt = 256,
    dropout: _DropoutOpt = 0.2,
    epochs: _EpochsOpt = 30,
    lr: _LrOpt = 1e-3,
    batch_size: _BatchOpt = 256,
    seed: _SeedOpt = 0,
    patience: _PatienceOpt = 5,
    monitor: _MonitorOpt = "weighted_f1",
    class_weights: _ClassWeightsOpt = True,
    standardize: _StandardizeOpt = True,
    drop_missing: _DropMissingOpt = False,
    preload: _PreloadOpt = "auto",
    workers: _WorkersOpt = 0,
    max_steps: _MaxStepsOpt = -1,
    threads: _ThreadsOpt = 0,
    out: _OutOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train projector + fusion + classifier heads on cached features (Lightning).

    The run directory gets config.json, labels.json, features.json, splits.csv,
    metrics.csv, checkpoints/best.ckpt, metrics.json, confusion.png and curves.png.

    Examples:
      emofs train head --encoders hubert,mae,videomae,eva --split-by speaker
      emofs train head -e egemaps --fusion attention --hidden 128 --epochs 50 --out runs/egemaps
    """
    from heads.train import prefetch_lightning, train_head

    prefetch_lightning()  # import Lightning while the flags are checked and data loads
    cfg = _head_config(
        encoders=encoders, label=label, where=where, split_by=split_by, folds=folds, fold=fold,
        fusion=fusion, hidden=hidden, dropout=dropout, epochs=epochs, lr=lr,
        batch_size=batch_size, seed=seed, patience=patience, monitor=monitor,
        class_weights=class_weights, standardize=standardize, drop_missing=drop_missing, preload=preload,
        workers=workers, max_steps=max_steps, threads=threads,
    )
    result = train_head(_open_store(store), cfg, out=out)
    if as_json:
        typer.echo(json.dumps(result.as_dict(), default=str))
        return
    _print_figures(result.test, title=f"{result.run_dir} test (best epoch {result.best_epoch})")
    typer.echo(f"run: {result.run_dir}")


def _print_figures(figures: dict[str, Any], *, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    head = Table("clips", "accuracy (WAR)", "weighted F1", "macro F1", "UAR", title=title)
    head.add_row(str(figures["n"]), *(f"{figures[k]:.3f}" for k in ("accuracy", "weighted_f1", "macro_f1", "uar")))
    per = Table("label", "precision", "recall", "F1", "support")
    for name, row in figures["per_class"].items():
        per.add_row(name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    console = Console()
    console.print(head)
    console.print(per)


@app.command("eval")
def eval_cmd(
    run: _RunArg,
    where: WhereOpt = None,
    drop_missing: _DropMissingOpt = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score a trained head on any labelled clips of the store.

    Examples:
      emofs eval runs/20250101-120000-hubert+mae --where "split = 'test'"
      emofs eval runs/egemaps --where "speaker = '1001'" --json
    """
    from heads.predict import evaluate_run

    figures = evaluate_run(_open_store(store), run, where=where, drop_missing=drop_missing)
    if as_json:
        typer.echo(json.dumps(figures, default=str))
        return
    _print_figures(figures, title=f"{figures['run_id']}" + (f" where {where}" if where else ""))


@app.command("ablate")
def ablate_cmd(
    encoders: _EncodersOpt,
    label: _LabelOpt = "label",
    where: WhereOpt = None,
    split_by: _SplitByOpt = None,
    folds: _FoldsOpt = 0,
    fold: _FoldOpt = 0,
    fusion: _FusionOpt = "concat",
    hidden: _HiddenOpt = 256,
    dropout: _DropoutOpt = 0.2,
    epochs: _EpochsOpt = 30,
    lr: _LrOpt = 1e-3,
    batch_size: _BatchOpt = 256,
    seed: _SeedOpt = 0,
    patience: _PatienceOpt = 5,
    monitor: _MonitorOpt = "weighted_f1",
    class_weights: _ClassWeightsOpt = True,
    standardize: _StandardizeOpt = True,
    drop_missing: _DropMissingOpt = False,
    preload: _PreloadOpt = "auto",
    max_steps: _MaxStepsOpt = -1,
    threads: _ThreadsOpt = 0,
    out: _OutOpt = None,
    fmt: FormatOpt = "table",
    store: StoreOpt = None,
) -> None:
    """Train a head on every non-empty subset of --encoders (same clips, split and seed).

    Writes one run per subset plus ablation.csv and ablation.png under --out.

    Examples:
      emofs ablate --encoders hubert,mae,videomae,eva --split-by speaker
      emofs ablate -e egemaps,text --epochs 20 --out runs/ablation-1 --format csv
    """
    from heads.train import ablate, prefetch_lightning

    _check_format(fmt)
    prefetch_lightning()
    cfg = _head_config(
        encoders=encoders, label=label, where=where, split_by=split_by, folds=folds, fold=fold,
        fusion=fusion, hidden=hidden, dropout=dropout, epochs=epochs, lr=lr,
        batch_size=batch_size, seed=seed, patience=patience, monitor=monitor,
        class_weights=class_weights, standardize=standardize, drop_missing=drop_missing, preload=preload,
        max_steps=max_steps, threads=threads,
    )
    frame = ablate(_open_store(store), cfg, out=out)
    _print_frame(frame, fmt, default_columns=["encoders", "accuracy", "weighted_f1", "macro_f1", "uar",
                                              f"val_{monitor}", "best_epoch"])


@app.command("predict")
def predict_cmd(
    run: _RunArg,
    where: WhereOpt = None,
    name: Annotated[
        Optional[str], typer.Option("--name", help="Dataset name predictions/<name>.lance. [default: run id]")
    ] = None,
    drop_missing: _DropMissingOpt = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Predict clips with a trained head into predictions/<run>.lance (upsert by clip_id).

    Rows: clip_id, run_id, label, confidence, probs, prob_<label> per class,
    model_fingerprint, predicted_at.

    Examples:
      emofs predict runs/20250101-120000-hubert+mae
      emofs predict runs/egemaps --where "label IS NULL" --name egemaps-unlabelled
    """
    from heads.predict import predict_to_store

    report = predict_to_store(_open_store(store), run, where=where, name=name, drop_missing=drop_missing)
    if as_json:
        typer.echo(json.dumps(report, default=str))
        return
    counts = ", ".join(f"{k} {v}" for k, v in report["labels"].items())
    typer.echo(f"{report['rows']} clips -> {report['dataset']} (version {report['version']}): {counts}")


# ------------------------------------------------------------------------- label
@app.command("label")
def label_cmd(
    archives: Annotated[List[Path], typer.Argument(help="Folders (walked recursively) or media files.")],
    run: Annotated[Path, typer.Option("--run", help="A head run directory (`emofs train head`).")],
    store: StoreOpt = None,
    engine: Annotated[str, typer.Option("--engine", help="local or ray.")] = "local",
    ray_address: Annotated[
        Optional[str], typer.Option("--ray-address", help="Ray cluster (ray://HEAD:10001 or auto); default: local Ray.")
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", help="CSV or Parquet file with every clip of the archives.")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Clips per encoder batch and commit.")] = 16,
    workers: Annotated[
        str, typer.Option("--workers", help="Decoding processes, local engine: auto (one per core) or N.")
    ] = "auto",
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    name: Annotated[
        Optional[str], typer.Option("--name", help="Prediction dataset name [default: the run's name].")
    ] = None,
    llm_run: Annotated[Optional[Path], typer.Option("--llm-run", help="An `emofs llm train` run (with --explain).")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Add a one-sentence LLM reason per clip.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Label new archives with a trained head: ingest, extract what is missing, predict.

    Resumable and idempotent: a rerun labels only new or changed files; a killed run
    continues where it stopped. Predictions go to predictions/<run>.lance and --out.

    Examples:
      emofs label new_videos/ --run runs/head1 --out labels.csv
      emofs label /mnt/batch7 --run runs/head1 --store s3://bucket/emofs --engine ray --ray-address auto
    """
    from workflows.label import label

    report = label(archives, _open_store(store, create=True), run, engine=engine,
                   ray_address=ray_address, out=out, batch_size=batch_size, workers=workers,
                   device=device, name=name, llm_run=llm_run, explain=explain, progress=not as_json)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), default=str))
        return
    counts = ", ".join(f"{k} {v}" for k, v in report.label_counts.items()) or "none"
    typer.echo(
        f"{report.files} files, {report.clips} clips: {report.labelled} labelled now, "
        f"{report.already_labelled} already labelled, {len(report.errors)} errors "
        f"({report.seconds:.1f}s, {report.clips_per_s:.1f} clips/s, engine {report.engine}) -> {report.dataset}"
    )
    typer.echo(f"labels: {counts}")
    for err in report.errors[:10]:
        typer.echo(f"  error {err['path']}: {err['error']}", err=True)
    if len(report.errors) > 10:
        typer.echo(f"  ... {len(report.errors) - 10} more: `emofs errors`", err=True)
    if report.out:
        typer.echo(f"wrote {report.out}")


# ------------------------------------------------------------------------ vacuum
@app.command()
def vacuum(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Delete files of versions older than this: 0, 30m, 12h, 7d.")
    ] = "1h",
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compact every dataset and delete the files only old versions still use.

    Batch commits and compaction leave replaced files behind for Lance's version history;
    this reclaims them. The current data is never touched. Run it while no other emofs
    command writes to the store.

    Examples:
      emofs vacuum                 # versions older than an hour
      emofs vacuum --older-than 0  # everything but the current version
    """
    from featurestore.maintenance import parse_age, vacuum as run_vacuum

    age = parse_age(older_than)
    target = _open_store(store)
    size_before = target.size_bytes()
    rows = run_vacuum(target, age)
    size_after = target.size_bytes()
    if as_json:
        typer.echo(json.dumps({"datasets": [vars(r) for r in rows], "bytes_before": size_before,
                               "bytes_after": size_after}))
        return
    for row in rows:
        typer.echo(f"  {row.dataset:<32} {row.bytes_before / 2**20:8.1f} -> {row.bytes_after / 2**20:.1f} MiB, "
                   f"fragments {row.fragments_before} -> {row.fragments_after}, "
                   f"{row.versions_removed} old versions removed")
    typer.echo(f"store {target.uri}: {size_before / 2**20:.1f} MiB -> {size_after / 2**20:.1f} MiB")


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
