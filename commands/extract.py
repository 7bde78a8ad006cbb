"""Encoder commands: ``extract`` (run frozen encoders once) and ``encoders`` (the registry)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .common import (
    DeviceOpt,
    EncoderBatchOpt,
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

__all__ = ["extract_command", "encoders_command", "EngineOpt", "RayAddressOpt", "ActorsOpt", "GpusPerActorOpt"]

EngineOpt = Annotated[str, typer.Option("--engine", help="local (this machine) or ray (a Ray cluster).")]
RayAddressOpt = Annotated[
    Optional[str], typer.Option("--ray-address", help="Ray cluster (ray://HEAD:10001 or auto); default: local Ray.")
]
ActorsOpt = Annotated[
    Optional[int], typer.Option("--actors", help="Ray: encoder actors (default: one per GPU, else half the CPUs).")
]
GpusPerActorOpt = Annotated[
    Optional[float], typer.Option("--gpus-per-actor", help="Ray: GPUs per encoder actor; 0.5 = two actors per GPU.")
]

_ENCODER_COLUMNS = ["encoder", "tag", "modality", "dim", "token_dim", "weights", "local", "settings"]


DEFAULT_ENCODERS = "hubert,mae,videomae,eva"


def extract_command(
    encoders: Annotated[
        Optional[str],
        typer.Option("--encoders", "-e", help=f"Comma-separated NAME[:WEIGHTS] (tag, hub id or directory); default {DEFAULT_ENCODERS}, or the recipe's."),
    ] = None,
    where: WhereOpt = None,
    device: DeviceOpt = "auto",
    batch_size: EncoderBatchOpt = 16,
    workers: Annotated[
        str, typer.Option("--workers", help="Decoding processes: auto (one per core; all but one with a GPU) or N (0: in-process).")
    ] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="Stored float type: float16 or float32.")] = "float16",
    tokens: Annotated[
        Optional[str], typer.Option("--tokens", help="Token counts per encoder, e.g. eva=64,hubert=32.")
    ] = None,
    option: Annotated[
        Optional[str],
        typer.Option("--option", help="Encoder settings ENCODER.NAME=VALUE, e.g. hubert.pooling=mertools,eva.layout=minigptv2."),
    ] = None,
    recipe: Annotated[
        Optional[str],
        typer.Option("--recipe", help="A published model's feature recipe (emotion-llama): its encoders and settings."),
    ] = None,
    store: StoreOpt = None,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    actors: ActorsOpt = None,
    gpus_per_actor: GpusPerActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run frozen encoders over the store's clips once; reruns skip what is up to date.

    Each clip is decoded once for all encoders (worker processes, or Ray tasks with
    --engine ray), encoders run batched (--batch-size per actor/GPU on Ray), results are
    committed per batch (a killed run resumes). Failures go to errors.lance.

    Examples:
      emofs extract --encoders hubert:tiny,mae:tiny,videomae:tiny,eva:tiny,egemaps
      emofs extract --encoders eva:/models/eva-g --tokens eva=64 --where "split = 'train'"
      emofs extract --store s3://bucket/emofs --engine ray --ray-address auto --gpus-per-actor 0.5
      emofs extract --recipe emotion-llama --encoders mae:/models/mer-mae,videomae:/models/mer-videomae,hubert,eva
      emofs extract --encoders hubert --option hubert.pooling=mertools
    """
    from extractors import parse_token_counts
    from extractors.engine import extract_with
    from extractors.recipes import parse_encoder_options, recipe_settings

    # bad --tokens / --option / --recipe fail before the store opens
    token_counts = parse_token_counts(tokens)
    refs = csv_list(encoders, "--encoders") if encoders is not None else None
    settings: dict = {}
    if recipe:
        refs, settings = recipe_settings(recipe, refs)
    for name, opts in parse_encoder_options(option).items():
        settings.setdefault(name, {}).update(opts)
    report = extract_with(
        engine, open_store(store), refs or csv_list(DEFAULT_ENCODERS, "--encoders"), ray_address=ray_address,
        actors=actors, gpus_per_actor=gpus_per_actor, where=where, device=device,
        batch_size=batch_size, workers=workers, dtype=dtype, tokens=token_counts, encoder_options=settings,
    )
    if as_json:
        echo_json(report.as_dict())
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


def encoders_command(fmt: FormatOpt = "table") -> None:
    """List the encoder registry: tags, modality, dim, default weights, availability.

    Examples:
      emofs encoders
      emofs encoders --format json
    """
    import polars as pl

    from extractors import encoder_table

    check_format(fmt)
    frame = pl.DataFrame(encoder_table())
    if fmt == "table":  # the default tag starred instead of a true/false column
        frame = frame.with_columns(
            pl.when(pl.col("default")).then(pl.col("tag") + " *").otherwise(pl.col("tag")).alias("tag"),
            pl.when(pl.col("available")).then(pl.lit("yes")).otherwise(pl.lit("no")).alias("local"),
        )
    print_frame(frame, fmt, default_columns=_ENCODER_COLUMNS)
    if fmt == "table":
        typer.echo("* default tag; local: weights on this machine (tiny / none need none); settings: "
                   "--option ENCODER.NAME=VALUE (first value the default), --tokens ENCODER=N", err=True)
