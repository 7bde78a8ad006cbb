"""Similarity commands: ``index build / list / drop`` and ``similar``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .common import (
    FormatOpt,
    JsonOpt,
    StoreOpt,
    WhereOpt,
    check_format,
    echo_json,
    open_store,
    print_frame,
    print_rows,
    sub_app,
)

__all__ = [
    "index_app",
    "index_build_command",
    "index_list_command",
    "index_drop_command",
    "similar_command",
]

index_app = sub_app("FAISS indexes over feature sets (cosine): build / update, list, drop.")

_INDEX_COLUMNS = ["name", "kind", "encoders", "weights", "rows", "dim", "updated_at", "status"]
#: Build parameters worth a mention in the one-line summary.
_TUNED = ("nlist", "nprobe", "M", "efSearch", "tuned_recall_at_10")


@index_app.command("build")
def index_build_command(
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
    normalize: Annotated[
        Optional[str],
        typer.Option("--normalize", help="Z-score each group of this clip column (e.g. speaker) "
                                          "with its own mean/std instead; none: off."),
    ] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build an index, or add the clips extracted since it was built.

    A changed encoder spec, weights or kind rebuilds it from scratch (and says why).

    Examples:
      emofs index build --encoder egemaps
      emofs index build --fused hubert,eva --weights 1,0.5 --kind hnsw
      emofs index build --encoder egemaps --normalize speaker --name egemaps-spk
    """
    from featurestore.index import IndexConfig, build_index

    config = IndexConfig.from_flags(encoder=encoder, fused=fused, weights=weights, kind=kind, name=name,
                                    recall=recall, nlist=nlist, rebuild=rebuild, standardize=standardize,
                                    normalize=normalize)
    report = build_index(open_store(store), config)
    if as_json:
        echo_json(report.as_dict())
        return
    why = f" ({report.reason})" if report.reason else ""
    tuned = ", ".join(f"{k}={v}" for k, v in report.params.items() if k in _TUNED)
    typer.echo(
        f"index {report.name}: {report.mode}{why}, {report.kind}, {report.rows} rows "
        f"(+{report.added}), dim {report.dim}" + (f", {tuned}" if tuned else "")
        + f" in {report.seconds:.1f}s"
    )
    if report.normalize:
        n = report.normalize
        typer.echo(f"normalised by {n['column']}: {n['groups']} groups on their own statistics"
                   + (f", {len(n['fallback_groups'])} small/unknown on the indexed rows'"
                      if n["fallback_groups"] else ""))


@index_app.command("list")
def index_list_command(fmt: FormatOpt = "table", store: StoreOpt = None) -> None:
    """List the store's indexes: kind, encoders, rows, when built, and whether stale.

    Examples:
      emofs index list
      emofs index list --format json
    """
    import polars as pl

    from featurestore.index import list_indexes

    check_format(fmt)
    rows = list_indexes(open_store(store))
    frame = pl.DataFrame(rows) if rows else pl.DataFrame(
        schema={c: pl.Utf8 for c in ("name", "kind", "encoders", "rows", "status")})
    print_frame(frame, fmt, default_columns=_INDEX_COLUMNS)


@index_app.command("drop")
def index_drop_command(
    name: Annotated[str, typer.Argument(help="Index name (see `emofs index list`).")],
    store: StoreOpt = None,
) -> None:
    """Delete an index (its .faiss, id map and manifest); feature sets are untouched.

    Examples:
      emofs index drop egemaps
    """
    from featurestore.index import drop_index

    removed = drop_index(open_store(store), name)
    typer.echo(f"dropped index {name} ({len(removed)} files)")


def similar_command(
    query: Annotated[str, typer.Argument(help="A clip_id, a path in the store, or a new media file.")],
    k: Annotated[int, typer.Option("-k", "--k", help="Number of neighbours.")] = 10,
    index: Annotated[
        Optional[str], typer.Option("--index", help="Index name (default: the only one, or the newest that holds the query clip).")
    ] = None,
    where: WhereOpt = None,
    include_self: Annotated[bool, typer.Option("--include-self", help="Keep the query clip.")] = False,
    add: Annotated[bool, typer.Option("--add", help="Store a new media file and its features.")] = False,
    group: Annotated[
        Optional[str], typer.Option("--group", help="The query's group (e.g. speaker) for a --normalize index.")
    ] = None,
    fmt: FormatOpt = "table",
    store: StoreOpt = None,
) -> None:
    """Clips that feel like QUERY: rank, clip_id, path, label, cosine score, label vote.

    Examples:
      emofs similar crema_d/mp4/1001_DFA_SAD_XX.mp4 -k 5
      emofs similar 03-01-04-01-01-01-05.mp4 --where "label = 'sad' AND split = 'train'"
      emofs similar new.mp4 --index hubert+eva --add --format json
      emofs similar new.wav --index egemaps-spk --group 1001
    """
    from featurestore.index import RESULT_COLUMNS
    from workflows.similar import check_query, find_similar

    check_format(fmt)
    check_query(query)  # before the store is opened: "" is no folder to search for
    result = find_similar(open_store(store), query, k=k, index=index, where=where,
                          include_self=include_self, add=add, group=group)
    for note in result.notes:
        if note.startswith("using index"):
            typer.echo(note, err=True)
    rows = result.rows
    # The path column only earns its width where it says more than the clip id.
    same_path = rows and all(r["path"] in (None, r["clip_id"]) for r in rows)
    columns = ["rank", "clip_id", "label", "score"] if same_path else list(RESULT_COLUMNS)
    print_rows(rows, RESULT_COLUMNS, fmt, default_columns=columns)
    vote = result.vote()
    if vote:
        typer.echo(vote, err=fmt != "table")
