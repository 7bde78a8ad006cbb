"""Batch labelling: ``label`` (ingest -> extract what is missing -> predict [-> reason])."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from .common import DeviceOpt, EncoderBatchOpt, JsonOpt, StoreOpt, echo_json, open_store
from .extract import ActorsOpt, EngineOpt, GpusPerActorOpt, RayAddressOpt

__all__ = ["label_command"]

#: Errors listed one per line before the rest are summed up.
_ERRORS_SHOWN = 10


def label_command(
    archives: Annotated[List[str], typer.Argument(help="Folders (walked recursively), media files, or s3:// prefixes.")],
    run: Annotated[Path, typer.Option("--run", help="A head run directory (`emofs train head`).")],
    store: StoreOpt = None,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    actors: ActorsOpt = None,
    gpus_per_actor: GpusPerActorOpt = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", help="CSV or Parquet file with every clip of the archives.")
    ] = None,
    batch_size: EncoderBatchOpt = 16,
    workers: Annotated[
        str, typer.Option("--workers", help="Decoding processes, local engine: auto (one per core) or N.")
    ] = "auto",
    device: DeviceOpt = "auto",
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
      emofs label s3://bucket/batch8 --run runs/head1 --engine ray --gpus-per-actor 0.5 --batch-size 64
    """
    from workflows.label import label

    report = label(archives, open_store(store, create=True), run, engine=engine, ray_address=ray_address,
                   actors=actors, gpus_per_actor=gpus_per_actor, out=out, batch_size=batch_size, workers=workers,
                   device=device, name=name, llm_run=llm_run, explain=explain, progress=not as_json)
    if as_json:
        echo_json(report.as_dict())
        return
    counts = ", ".join(f"{k} {v}" for k, v in report.label_counts.items()) or "none"
    typer.echo(
        f"{report.files} files, {report.clips} clips: {report.labelled} labelled now, "
        f"{report.already_labelled} already labelled, {len(report.errors)} errors "
        f"({report.seconds:.1f}s, {report.clips_per_s:.1f} clips/s, engine {report.engine}) -> {report.dataset}"
    )
    typer.echo(f"labels: {counts}")
    for err in report.errors[:_ERRORS_SHOWN]:
        typer.echo(f"  error {err['path']}: {err['error']}", err=True)
    if len(report.errors) > _ERRORS_SHOWN:
        typer.echo(f"  ... {len(report.errors) - _ERRORS_SHOWN} more: `emofs errors`", err=True)
    if report.out:
        typer.echo(f"wrote {report.out}")
