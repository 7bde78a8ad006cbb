"""The analyst app command: ``emofs app`` (serve the page) and ``emofs app renditions``
(make the browser renditions of a store's media ahead)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .common import JsonOpt, StoreOpt, WhereOpt, echo_json, open_store

__all__ = ["app_command"]


def app_command(
    action: Annotated[
        Optional[str],
        typer.Argument(metavar="renditions", show_default=False,
                       help="`renditions`: make the browser renditions of the store's media now "
                       "(a progress bar), then exit; the page would make each on first view."),
    ] = None,
    store: StoreOpt = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind; not loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8765,
    read_only: Annotated[bool, typer.Option("--read-only", help="Turn label corrections off.")] = False,
    token: Annotated[
        Optional[str],
        typer.Option("--token", envvar="EMOFS_APP_TOKEN",
                     help="Secret every request must carry (`auto`: a random one); required off loopback."),
    ] = None,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", help="Largest file the upload search takes.")] = 50.0,
    runs: Annotated[
        Optional[str],
        typer.Option("--runs", help="Folder of `train head` run directories (modality weights, CV "
                     "tables); default $EMOFS_APP_RUNS, else runs (either may not exist yet)."),
    ] = None,
    where: WhereOpt = None,
    force: Annotated[bool, typer.Option("--force", help="With `renditions`: remake those already made.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Serve the analyst web page over the store: search, listen, watch, filter, map, correct.

    The page and its JSON API (/api/clips, /api/similar/CLIP, /media/CLIP, schema at
    /api/openapi.json) are served from this machine only, with every asset local.

    Examples:
      emofs app --store ./emofs-store            # then open http://127.0.0.1:8765/
      emofs app --read-only --port 9000 --runs ./runs
      emofs app --host 0.0.0.0 --token auto      # prints the URL with its token
      emofs app renditions --where "uri LIKE '%.flv'"   # flv/avi/mkv... playable ahead
    """
    if action == "renditions":
        return _renditions(store, where, force, as_json)
    if action is not None:
        raise typer.BadParameter(f"unknown action {action!r}: the only one is `renditions`", param_hint="ACTION")
    if where or force:
        raise typer.BadParameter("--where and --force go with `emofs app renditions`", param_hint="--where")
    from workflows.app import AppConfig, serve

    config = AppConfig(store=store, host=host, port=port, read_only=read_only, token=token,
                       max_upload_mb=max_upload_mb, runs_dir=runs)
    target = open_store(store)  # a missing store fails here, in one line
    typer.echo(f"emofs app: {config.url()}  (store {target.uri}{', read-only' if read_only else ''}; "
               "Ctrl+C stops it)", err=True)
    serve(config)


def _renditions(store: str | None, where: str | None, force: bool, as_json: bool) -> None:
    from workflows.app.renditions import make_renditions

    report = make_renditions(open_store(store), where, force=force)
    if as_json:
        echo_json(report)
        return
    typer.echo(f"{report['clips']} clips: {report['made']} renditions made ({report['bytes'] / 2**20:.1f} MiB, "
               f"{report['seconds']:.1f} s), {report['cached']} already made, {report['direct']} play as they are, "
               f"{len(report['failed'])} failed")
    for failure in report["failed"][:20]:
        typer.echo(f"  {failure['clip_id']}: {failure['error']}")
    if len(report["failed"]) > 20:
        typer.echo(f"  ... and {len(report['failed']) - 20} more (--json lists them all)")
