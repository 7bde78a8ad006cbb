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
    run: Annotated[Optional[Path], typer.Option("--run", help="A head run directory (`emofs train head`).")] = None,
    llm: Annotated[
        Optional[Path],
        typer.Option("--llm", help="Label with an LLM run instead (`emofs llm train`, or an imported Emotion-LLaMA)."),
    ] = None,
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
    With --llm RUN instead of --run, an LLM run answers for every clip (its answers and
    their labels go to --out).

    Examples:
      emofs label new_videos/ --run runs/head1 --out labels.csv
      emofs label new_videos/ --llm runs/emotion-llama --out llm-labels.csv
      emofs label /mnt/batch7 --run runs/head1 --store s3://bucket/emofs --engine ray --ray-address auto
      emofs label s3://bucket/batch8 --run runs/head1 --engine ray --gpus-per-actor 0.5 --batch-size 64
    """
    from featurestore.errors import InputError

    if (run is None) == (llm is None):
        raise InputError("pass one of --run HEAD_RUN (a head) or --llm LLM_RUN (an LLM run)")
    if llm is not None:
        _label_with_llm(archives, llm, store, out, batch_size, workers, device, engine, explain, as_json)
        return
    from workflows.label import label

    report = label(archives, open_store(store, create=True), run, engine=engine, ray_address=ray_address,
                   actors=actors, gpus_per_actor=gpus_per_actor, out=out, batch_size=batch_size, workers=workers,
                   device=device, name=name, llm_run=llm_run, explain=explain, progress=not as_json)
    if as_json:
        echo_json(report.as_dict())
        return
    typer.echo(
        f"{report.files} files, {report.clips} clips: {report.labelled} labelled now, "
        f"{report.already_labelled} already labelled, {len(report.errors)} errors "
        f"({report.seconds:.1f}s, {report.clips_per_s:.1f} clips/s, engine {report.engine}) -> {report.dataset}"
    )
    _echo_labels_and_errors(report)


def _label_with_llm(archives, llm: Path, store, out, batch_size, workers, device, engine, explain, as_json) -> None:
    from featurestore.errors import InputError
    from workflows.llm_label import label_with_llm

    if engine != "local" or explain:
        raise InputError("--llm labels on the local engine and writes the answers themselves: drop --engine / --explain")
    report = label_with_llm(archives, open_store(store, create=True), llm, out=out, batch_size=batch_size,
                            workers=workers, device=device, progress=not as_json)
    if as_json:
        echo_json(report.as_dict())
        return
    typer.echo(f"{report.files} files, {report.clips} clips: {report.labelled} answered by {llm}, "
               f"{len(report.errors)} without an answer ({report.seconds:.1f}s)")
    _echo_labels_and_errors(report)


def _echo_labels_and_errors(report) -> None:
    """The label counts, the first errors (the rest counted) and the --out file of a label run."""
    counts = ", ".join(f"{k} {v}" for k, v in report.label_counts.items()) or "none"
    typer.echo(f"labels: {counts}")
    for err in report.errors[:_ERRORS_SHOWN]:
        typer.echo(f"  error {err['path']}: {err['error']}", err=True)
    if len(report.errors) > _ERRORS_SHOWN:
        typer.echo(f"  ... {len(report.errors) - _ERRORS_SHOWN} more: `emofs errors`", err=True)
    if report.out:
        typer.echo(f"wrote {report.out}")
